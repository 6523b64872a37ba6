from . import customer_pb2 as _customer_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IntakeItem(_message.Message):
    __slots__ = ("api_key", "request")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    request: _customer_pb2.SubmitJobsRequest
    def __init__(self, api_key: _Optional[str] = ..., request: _Optional[_Union[_customer_pb2.SubmitJobsRequest, _Mapping]] = ...) -> None: ...

class SubmitManyRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[IntakeItem]
    def __init__(self, items: _Optional[_Iterable[_Union[IntakeItem, _Mapping]]] = ...) -> None: ...

class IntakeResult(_message.Message):
    __slots__ = ("code", "message", "response")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    response: _customer_pb2.SubmitJobsResponse
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., response: _Optional[_Union[_customer_pb2.SubmitJobsResponse, _Mapping]] = ...) -> None: ...

class SubmitManyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[IntakeResult]
    def __init__(self, results: _Optional[_Iterable[_Union[IntakeResult, _Mapping]]] = ...) -> None: ...
