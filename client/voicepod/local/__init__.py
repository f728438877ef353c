"""A local RunPod endpoint emulator over the SDK's real worker loop (``voicepod serve-local``)."""

from .process import LocalServer
from .server import Emulator, EndpointConfig

__all__ = ["Emulator", "EndpointConfig", "LocalServer"]
