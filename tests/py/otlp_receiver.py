"""A real OTLP/gRPC metrics receiver built from the official OpenTelemetry
protos (PyPI `opentelemetry-proto` + `grpcio`): appends every export request
as one JSON line (protobuf's canonical JSON mapping) to a file.

usage: otlp_receiver.py PORT OUTFILE
"""

import json
import sys
from concurrent import futures

import grpc
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)

PORT, OUT = int(sys.argv[1]), sys.argv[2]


class Receiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):
        line = json.dumps(MessageToDict(request, preserving_proto_field_name=True))
        with open(OUT, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        return metrics_service_pb2.ExportMetricsServiceResponse()


server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Receiver(), server)
server.add_insecure_port(f"127.0.0.1:{PORT}")
server.start()
print("otlp receiver listening", file=sys.stderr, flush=True)
server.wait_for_termination()
