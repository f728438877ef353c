// The microphone, in the audio thread: mono, downsampled to 16 kHz, PCM16, in 20 ms frames, with each frame's
// level for the meter. Runs as an AudioWorklet so that no frame waits on the page's main thread.
const OUT_RATE = 16000;
const FRAME = 320; // 20 ms at 16 kHz

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / OUT_RATE; // input samples per output sample (3 at 48 kHz)
    this.pos = 0; // where the next output sample starts, in input samples from the start of `this.carry`
    this.carry = new Float32Array(0); // input not yet consumed
    this.frame = new Int16Array(FRAME);
    this.filled = 0;
    this.sumSquares = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    const input = new Float32Array(this.carry.length + channel.length);
    input.set(this.carry);
    input.set(channel, this.carry.length);
    // Each output sample is the mean of the input samples it spans: a box filter, enough to keep speech's
    // little energy above 8 kHz from folding back (a browser has no resampler to call from here).
    while (this.pos + this.ratio <= input.length) {
      const from = Math.floor(this.pos);
      const to = Math.max(from + 1, Math.floor(this.pos + this.ratio));
      let sum = 0;
      for (let i = from; i < to; i++) sum += input[i];
      const value = Math.max(-1, Math.min(1, sum / (to - from)));
      this.frame[this.filled++] = Math.round(value * 32767);
      this.sumSquares += value * value;
      this.pos += this.ratio;
      if (this.filled === FRAME) {
        const level = Math.sqrt(this.sumSquares / FRAME);
        const out = this.frame;
        this.port.postMessage({ pcm: out.buffer, level }, [out.buffer]);
        this.frame = new Int16Array(FRAME);
        this.filled = 0;
        this.sumSquares = 0;
      }
    }
    const used = Math.floor(this.pos);
    this.carry = input.slice(used);
    this.pos -= used;
    return true;
  }
}

registerProcessor("voicepod-capture", Capture);
