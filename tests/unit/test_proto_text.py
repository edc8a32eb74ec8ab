"""Our event files as ``.proto`` text (what the relay registers), and the record framing."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2
from google.protobuf.message import Message

from authloyalty.platform.kafka_codec import frame
from authloyalty.platform.proto_text import proto_source
from authloyalty.rpc.registration.v1.registration_pb2 import RegistrationMessage
from authloyalty.rpc.session.v1.session_pb2 import SessionRevoked

MESSAGES = [RegistrationMessage, SessionRevoked]


def compiled(source: str, name: str, work: Path) -> descriptor_pb2.FileDescriptorProto:
    from grpc_tools import protoc

    (work / name).parent.mkdir(parents=True, exist_ok=True)
    (work / name).write_text(source)
    out = work / "set.pb"
    assert protoc.main(["protoc", f"-I{work}", f"--descriptor_set_out={out}", name]) == 0
    file = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    for message in file.message_type:  # protoc fills in what the generated code leaves out
        for field in message.field:
            field.ClearField("json_name")
    return file


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.DESCRIPTOR.full_name)
def test_the_text_compiles_back_to_the_same_file(message: type[Message],
                                                 tmp_path: Path) -> None:
    original = descriptor_pb2.FileDescriptorProto()
    message.DESCRIPTOR.file.CopyToProto(original)
    source = proto_source(message.DESCRIPTOR.file)
    assert compiled(source, original.name, tmp_path) == original


@pytest.mark.parametrize("message", [
    RegistrationMessage(uuid=str(uuid4()), type="registration"),
    SessionRevoked(session_id=str(uuid4()), user_id=str(uuid4()), revoked_until_unix=1,
                   reason="logout"),
], ids=lambda m: m.DESCRIPTOR.full_name)
def test_framing_is_byte_for_byte_confluents(message: Message) -> None:
    registry = SchemaRegistryClient.new_client({"url": f"mock://frame-{uuid4().hex}"})
    theirs = ProtobufSerializer(type(message), registry, {"use.deprecated.format": False})(
        message, SerializationContext("t", MessageField.VALUE))
    assert theirs is not None
    schema_id = int.from_bytes(theirs[1:5], "big")
    assert frame(schema_id, message) == theirs
