from . import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec", "idempotency_key")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    spec: _jobs_pb2.JobSpec
    idempotency_key: str
    def __init__(self, spec: _Optional[_Union[_jobs_pb2.JobSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job", "deduplicated")
    JOB_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    job: _jobs_pb2.Job
    deduplicated: bool
    def __init__(self, job: _Optional[_Union[_jobs_pb2.Job, _Mapping]] = ..., deduplicated: _Optional[bool] = ...) -> None: ...

class SubmitJobsRequest(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[SubmitJobRequest]
    def __init__(self, jobs: _Optional[_Iterable[_Union[SubmitJobRequest, _Mapping]]] = ...) -> None: ...

class SubmitJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[SubmitJobResponse]
    def __init__(self, jobs: _Optional[_Iterable[_Union[SubmitJobResponse, _Mapping]]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class TokenDelta(_message.Message):
    __slots__ = ("text", "tokens_so_far")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_SO_FAR_FIELD_NUMBER: _ClassVar[int]
    text: str
    tokens_so_far: int
    def __init__(self, text: _Optional[str] = ..., tokens_so_far: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job", "tokens", "moved")
    JOB_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    MOVED_FIELD_NUMBER: _ClassVar[int]
    job: _jobs_pb2.Job
    tokens: TokenDelta
    moved: JobMoved
    def __init__(self, job: _Optional[_Union[_jobs_pb2.Job, _Mapping]] = ..., tokens: _Optional[_Union[TokenDelta, _Mapping]] = ..., moved: _Optional[_Union[JobMoved, _Mapping]] = ...) -> None: ...

class JobMoved(_message.Message):
    __slots__ = ("from_node", "from_site", "to_node", "to_site", "reason", "detail", "resumed_tokens")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    FROM_SITE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_SITE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    RESUMED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    from_node: str
    from_site: str
    to_node: str
    to_site: str
    reason: str
    detail: str
    resumed_tokens: int
    def __init__(self, from_node: _Optional[str] = ..., from_site: _Optional[str] = ..., to_node: _Optional[str] = ..., to_site: _Optional[str] = ..., reason: _Optional[str] = ..., detail: _Optional[str] = ..., resumed_tokens: _Optional[int] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: _jobs_pb2.JobState
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[_jobs_pb2.JobState, str]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_jobs_pb2.Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[_jobs_pb2.Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TierPrice(_message.Message):
    __slots__ = ("tier", "usd_per_million_tokens", "latency_target_s")
    TIER_FIELD_NUMBER: _ClassVar[int]
    USD_PER_MILLION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_TARGET_S_FIELD_NUMBER: _ClassVar[int]
    tier: _jobs_pb2.Tier
    usd_per_million_tokens: float
    latency_target_s: float
    def __init__(self, tier: _Optional[_Union[_jobs_pb2.Tier, str]] = ..., usd_per_million_tokens: _Optional[float] = ..., latency_target_s: _Optional[float] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "kind", "max_input_tokens", "max_output_tokens", "embedding_dimensions", "max_batch", "prices", "nodes_serving", "accelerators")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    NODES_SERVING_FIELD_NUMBER: _ClassVar[int]
    ACCELERATORS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: _jobs_pb2.ModelKind
    max_input_tokens: int
    max_output_tokens: int
    embedding_dimensions: int
    max_batch: int
    prices: _containers.RepeatedCompositeFieldContainer[TierPrice]
    nodes_serving: int
    accelerators: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[_jobs_pb2.ModelKind, str]] = ..., max_input_tokens: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., embedding_dimensions: _Optional[int] = ..., max_batch: _Optional[int] = ..., prices: _Optional[_Iterable[_Union[TierPrice, _Mapping]]] = ..., nodes_serving: _Optional[int] = ..., accelerators: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...
