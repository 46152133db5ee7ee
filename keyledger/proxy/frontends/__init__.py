"""Wire protocols. Each frontend translates only: wire -> Call, result/error -> wire."""

from keyledger.proxy.frontends.aws import AwsFrontend
from keyledger.proxy.frontends.gcp_grpc import GcpGrpcFrontend
from keyledger.proxy.frontends.gcp_rest import GcpRestFrontend

__all__ = ["AwsFrontend", "GcpGrpcFrontend", "GcpRestFrontend"]
