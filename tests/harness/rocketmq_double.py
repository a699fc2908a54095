"""TEST DOUBLE: a local gRPC endpoint speaking the part of RocketMQ 5's
``apache.rocketmq.v2.MessagingService`` that a producer uses (QueryRoute,
Heartbeat, Telemetry, SendMessage, NotifyClientTermination).

No RocketMQ broker or proxy can run on this machine, so the RocketMQ channel is
tested at the wire: the real ``rocketmq-python-client`` producer talks gRPC to
this endpoint, which is built from the client package's own generated
protobufs and records every message it is sent (topic, body, keys, tag).
It is not a broker: it stores nothing and routes nowhere.
"""

from __future__ import annotations

import threading
import uuid
from concurrent import futures
from dataclasses import dataclass

from comfyui_harness import free_port


@dataclass(frozen=True)
class WireMessage:
    topic: str
    body: bytes
    keys: tuple[str, ...]
    tag: str
    message_type: int


class FakeRocketMQProxy:
    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[WireMessage] = []
        self.route_queries: list[str] = []
        self.heartbeats = 0
        self.terminations = 0
        self._lock = threading.Lock()
        self._server = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "FakeRocketMQProxy":
        import grpc
        from rocketmq.grpc_protocol import definition_pb2 as d
        from rocketmq.grpc_protocol import service_pb2 as s
        from rocketmq.grpc_protocol import service_pb2_grpc as sg

        double = self

        def ok_status():
            return d.Status(code=d.Code.OK, message="OK")

        class Servicer(sg.MessagingServiceServicer):
            def QueryRoute(self, request, context):
                with double._lock:
                    double.route_queries.append(request.topic.name)
                queue = d.MessageQueue(
                    topic=request.topic, id=0, permission=d.Permission.READ_WRITE,
                    broker=d.Broker(name="twitterchat-test-double", id=0, endpoints=d.Endpoints(
                        scheme=d.AddressScheme.IPv4,
                        addresses=[d.Address(host="127.0.0.1", port=double.port)])),
                    accept_message_types=[d.MessageType.NORMAL])
                return s.QueryRouteResponse(status=ok_status(), message_queues=[queue])

            def Heartbeat(self, request, context):
                with double._lock:
                    double.heartbeats += 1
                return s.HeartbeatResponse(status=ok_status())

            def Telemetry(self, request_iterator, context):
                for command in request_iterator:  # settings sync: acknowledge, push nothing back
                    if command.HasField("settings"):
                        yield s.TelemetryCommand(status=ok_status(), settings=command.settings)

            def SendMessage(self, request, context):
                entries = []
                with double._lock:
                    for message in request.messages:
                        props = message.system_properties
                        double.messages.append(WireMessage(
                            topic=message.topic.name, body=bytes(message.body), keys=tuple(props.keys),
                            tag=props.tag, message_type=props.message_type))
                        entries.append(s.SendResultEntry(status=ok_status(), message_id=props.message_id or
                                                         uuid.uuid4().hex, offset=len(double.messages)))
                return s.SendMessageResponse(status=ok_status(), entries=entries)

            def NotifyClientTermination(self, request, context):
                with double._lock:
                    double.terminations += 1
                return s.NotifyClientTerminationResponse(status=ok_status())

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        sg.add_MessagingServiceServicer_to_server(Servicer(), self._server)
        self._server.add_insecure_port(self.endpoint)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=1).wait(5)
            self._server = None
