from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SessionRevoked(_message.Message):
    __slots__ = ("session_id", "user_id", "revoked_until_unix", "reason")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REVOKED_UNTIL_UNIX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    user_id: str
    revoked_until_unix: int
    reason: str
    def __init__(self, session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., revoked_until_unix: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...
