from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccountChanged(_message.Message):
    __slots__ = ("user_id", "change", "changed_at_unix", "version")
    class Change(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CHANGE_UNSPECIFIED: _ClassVar[AccountChanged.Change]
        DELETED: _ClassVar[AccountChanged.Change]
        RESTORED: _ClassVar[AccountChanged.Change]
    CHANGE_UNSPECIFIED: AccountChanged.Change
    DELETED: AccountChanged.Change
    RESTORED: AccountChanged.Change
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    change: AccountChanged.Change
    changed_at_unix: int
    version: int
    def __init__(self, user_id: _Optional[str] = ..., change: _Optional[_Union[AccountChanged.Change, str]] = ..., changed_at_unix: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...
