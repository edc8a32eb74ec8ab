from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RegistrationMessage(_message.Message):
    __slots__ = ("uuid", "type")
    UUID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    type: str
    def __init__(self, uuid: _Optional[str] = ..., type: _Optional[str] = ...) -> None: ...
