"""A compiled protobuf file written back as ``.proto`` source, for the Schema Registry.

confluent-kafka's serializer registers a schema as a base64 ``FileDescriptorProto``; a
Confluent registry converts that to ``.proto`` text, Apicurio Registry 2.6 stores it as is and
then cannot parse it when it checks the next version against a compatibility rule. Registering
the text (what both read) keeps the rule working. Covers what our event files use: proto3,
package, options ``go_package``, messages (nested), enums, scalar/message/enum fields,
``repeated``/``optional``, imports.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2

_FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    _FDP.TYPE_DOUBLE: "double", _FDP.TYPE_FLOAT: "float", _FDP.TYPE_INT64: "int64",
    _FDP.TYPE_UINT64: "uint64", _FDP.TYPE_INT32: "int32", _FDP.TYPE_FIXED64: "fixed64",
    _FDP.TYPE_FIXED32: "fixed32", _FDP.TYPE_BOOL: "bool", _FDP.TYPE_STRING: "string",
    _FDP.TYPE_BYTES: "bytes", _FDP.TYPE_UINT32: "uint32", _FDP.TYPE_SFIXED32: "sfixed32",
    _FDP.TYPE_SFIXED64: "sfixed64", _FDP.TYPE_SINT32: "sint32", _FDP.TYPE_SINT64: "sint64",
}


def proto_source(file: Any) -> str:
    """``file`` (a ``FileDescriptor``) as ``.proto`` source text."""
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    lines = [f'syntax = "{proto.syntax or "proto2"}";', ""]
    if proto.package:
        lines += [f"package {proto.package};", ""]
    lines += [f'import "{dep}";' for dep in proto.dependency]
    if proto.options.HasField("go_package"):
        lines.append(f'option go_package = "{proto.options.go_package}";')
    if proto.dependency or proto.options.HasField("go_package"):
        lines.append("")
    for enum in proto.enum_type:
        lines += _enum(enum, "")
    for message in proto.message_type:
        lines += _message(message, "", proto.syntax == "proto3")
    return "\n".join(lines).rstrip() + "\n"


def _enum(enum: descriptor_pb2.EnumDescriptorProto, indent: str) -> list[str]:
    lines = [f"{indent}enum {enum.name} {{"]
    lines += [f"{indent}  {value.name} = {value.number};" for value in enum.value]
    return [*lines, f"{indent}}}", ""]


def _message(message: descriptor_pb2.DescriptorProto, indent: str, proto3: bool) -> list[str]:
    lines = [f"{indent}message {message.name} {{"]
    inner = indent + "  "
    for enum in message.enum_type:
        lines += _enum(enum, inner)
    for nested in message.nested_type:
        lines += _message(nested, inner, proto3)
    for field in message.field:
        lines.append(f"{inner}{_label(field, proto3)}{_type(field)} {field.name} = "
                     f"{field.number};")
    return [*lines, f"{indent}}}", ""]


def _label(field: descriptor_pb2.FieldDescriptorProto, proto3: bool) -> str:
    if field.label == _FDP.LABEL_REPEATED:
        return "repeated "
    if proto3:
        return "optional " if field.proto3_optional else ""
    return "required " if field.label == _FDP.LABEL_REQUIRED else "optional "


def _type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type in _SCALARS:
        return _SCALARS[field.type]
    return field.type_name  # fully qualified, with its leading dot
