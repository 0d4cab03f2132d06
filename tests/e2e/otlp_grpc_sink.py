"""An OTLP/gRPC receiver in its own process, for test_observability.

The test process forks every broker it starts; with gRPC loaded there, gRPC's fork handlers
ran in the children and could abort them (SIGABRT) before they exec'd. So the receiver lives
here: it prints `PORT <n>`, then one JSON line per span (`{"span": name, "attrs": {...}}`) and
per metric (`{"metric": name}`) it receives, until stdin closes.
"""

import json
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def attrs(kvs):
    out = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which in ("string_value", "int_value", "bool_value", "double_value") else None
    return out


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, req, ctx):
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    emit({"span": s.name, "attrs": attrs(s.attributes)})
        return trace_service_pb2.ExportTraceServiceResponse()


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, req, ctx):
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    emit({"metric": m.name})
        return metrics_service_pb2.ExportMetricsServiceResponse()


server = grpc.server(futures.ThreadPoolExecutor(4))
trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
emit({"port": port})
sys.stdin.read()  # until the test closes it
server.stop(0)
