"""Code shared by the three voicepod workers: input errors, the job stream wrapper, threads, model sources."""
