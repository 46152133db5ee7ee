"""Wire protocols. Each frontend translates only: wire -> Call, result/error -> wire."""

from keyledger.proxy.frontends.aws import AwsFrontend

__all__ = ["AwsFrontend"]
