import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from . import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CredentialKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CREDENTIAL_KIND_UNSPECIFIED: _ClassVar[CredentialKind]
    CREDENTIAL_KIND_TOKEN: _ClassVar[CredentialKind]
    CREDENTIAL_KIND_CERTIFICATE: _ClassVar[CredentialKind]
    CREDENTIAL_KIND_BOOTSTRAP: _ClassVar[CredentialKind]
CREDENTIAL_KIND_UNSPECIFIED: CredentialKind
CREDENTIAL_KIND_TOKEN: CredentialKind
CREDENTIAL_KIND_CERTIFICATE: CredentialKind
CREDENTIAL_KIND_BOOTSTRAP: CredentialKind

class EnrollRequest(_message.Message):
    __slots__ = ("agent_id", "site", "region", "csr_pem")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    site: str
    region: str
    csr_pem: bytes
    def __init__(self, agent_id: _Optional[str] = ..., site: _Optional[str] = ..., region: _Optional[str] = ..., csr_pem: _Optional[bytes] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("credential_id", "kind", "agent_id", "site", "region", "certificate_pem", "ca_pem", "token", "expires_at")
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_PEM_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    credential_id: str
    kind: CredentialKind
    agent_id: str
    site: str
    region: str
    certificate_pem: bytes
    ca_pem: bytes
    token: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, credential_id: _Optional[str] = ..., kind: _Optional[_Union[CredentialKind, str]] = ..., agent_id: _Optional[str] = ..., site: _Optional[str] = ..., region: _Optional[str] = ..., certificate_pem: _Optional[bytes] = ..., ca_pem: _Optional[bytes] = ..., token: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AttemptRef(_message.Message):
    __slots__ = ("job_id", "attempt")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class AgentHello(_message.Message):
    __slots__ = ("agent_id", "site", "region", "gpu_kind", "gpu_count", "gpu_memory_mb", "models", "max_concurrent_jobs", "running", "version", "idle_power_kw", "busy_power_kw", "resumable_models", "loadable_models")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    GPU_KIND_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_JOBS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IDLE_POWER_KW_FIELD_NUMBER: _ClassVar[int]
    BUSY_POWER_KW_FIELD_NUMBER: _ClassVar[int]
    RESUMABLE_MODELS_FIELD_NUMBER: _ClassVar[int]
    LOADABLE_MODELS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    site: str
    region: str
    gpu_kind: str
    gpu_count: int
    gpu_memory_mb: int
    models: _containers.RepeatedScalarFieldContainer[str]
    max_concurrent_jobs: int
    running: _containers.RepeatedCompositeFieldContainer[AttemptRef]
    version: str
    idle_power_kw: float
    busy_power_kw: float
    resumable_models: _containers.RepeatedScalarFieldContainer[str]
    loadable_models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_id: _Optional[str] = ..., site: _Optional[str] = ..., region: _Optional[str] = ..., gpu_kind: _Optional[str] = ..., gpu_count: _Optional[int] = ..., gpu_memory_mb: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., max_concurrent_jobs: _Optional[int] = ..., running: _Optional[_Iterable[_Union[AttemptRef, _Mapping]]] = ..., version: _Optional[str] = ..., idle_power_kw: _Optional[float] = ..., busy_power_kw: _Optional[float] = ..., resumable_models: _Optional[_Iterable[str]] = ..., loadable_models: _Optional[_Iterable[str]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("running_jobs", "free_slots", "power_draw_kw", "gpu_utilization", "running", "draining", "prefix_blocks", "prefill_tokens_per_s", "loaded_models", "loading_models", "load_failures", "load_s")
    class LoadSEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    POWER_DRAW_KW_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    PREFIX_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    LOADING_MODELS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FAILURES_FIELD_NUMBER: _ClassVar[int]
    LOAD_S_FIELD_NUMBER: _ClassVar[int]
    running_jobs: int
    free_slots: int
    power_draw_kw: float
    gpu_utilization: float
    running: _containers.RepeatedCompositeFieldContainer[AttemptRef]
    draining: bool
    prefix_blocks: _containers.RepeatedScalarFieldContainer[int]
    prefill_tokens_per_s: float
    loaded_models: _containers.RepeatedScalarFieldContainer[str]
    loading_models: _containers.RepeatedScalarFieldContainer[str]
    load_failures: _containers.RepeatedCompositeFieldContainer[ModelLoadFailure]
    load_s: _containers.ScalarMap[str, float]
    def __init__(self, running_jobs: _Optional[int] = ..., free_slots: _Optional[int] = ..., power_draw_kw: _Optional[float] = ..., gpu_utilization: _Optional[float] = ..., running: _Optional[_Iterable[_Union[AttemptRef, _Mapping]]] = ..., draining: _Optional[bool] = ..., prefix_blocks: _Optional[_Iterable[int]] = ..., prefill_tokens_per_s: _Optional[float] = ..., loaded_models: _Optional[_Iterable[str]] = ..., loading_models: _Optional[_Iterable[str]] = ..., load_failures: _Optional[_Iterable[_Union[ModelLoadFailure, _Mapping]]] = ..., load_s: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ModelLoadFailure(_message.Message):
    __slots__ = ("model", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class JobStarted(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: AttemptRef
    def __init__(self, ref: _Optional[_Union[AttemptRef, _Mapping]] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("ref", "text_delta", "tokens_so_far")
    REF_FIELD_NUMBER: _ClassVar[int]
    TEXT_DELTA_FIELD_NUMBER: _ClassVar[int]
    TOKENS_SO_FAR_FIELD_NUMBER: _ClassVar[int]
    ref: AttemptRef
    text_delta: str
    tokens_so_far: int
    def __init__(self, ref: _Optional[_Union[AttemptRef, _Mapping]] = ..., text_delta: _Optional[str] = ..., tokens_so_far: _Optional[int] = ...) -> None: ...

class JobOutcome(_message.Message):
    __slots__ = ("ref", "result", "error", "run_ms", "energy_kwh", "load_ms")
    REF_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RUN_MS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_KWH_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    ref: AttemptRef
    result: _jobs_pb2.JobResult
    error: str
    run_ms: float
    energy_kwh: float
    load_ms: float
    def __init__(self, ref: _Optional[_Union[AttemptRef, _Mapping]] = ..., result: _Optional[_Union[_jobs_pb2.JobResult, _Mapping]] = ..., error: _Optional[str] = ..., run_ms: _Optional[float] = ..., energy_kwh: _Optional[float] = ..., load_ms: _Optional[float] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "started", "progress", "outcome")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    hello: AgentHello
    heartbeat: Heartbeat
    started: JobStarted
    progress: JobProgress
    outcome: JobOutcome
    def __init__(self, hello: _Optional[_Union[AgentHello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., started: _Optional[_Union[JobStarted, _Mapping]] = ..., progress: _Optional[_Union[JobProgress, _Mapping]] = ..., outcome: _Optional[_Union[JobOutcome, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("agent_id", "heartbeat_interval_ms", "lease_ms")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    heartbeat_interval_ms: int
    lease_ms: int
    def __init__(self, agent_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("ref", "spec", "lease_expires_at", "resume_text", "resume_tokens")
    REF_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    RESUME_TEXT_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ref: AttemptRef
    spec: _jobs_pb2.JobSpec
    lease_expires_at: _timestamp_pb2.Timestamp
    resume_text: str
    resume_tokens: int
    def __init__(self, ref: _Optional[_Union[AttemptRef, _Mapping]] = ..., spec: _Optional[_Union[_jobs_pb2.JobSpec, _Mapping]] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resume_text: _Optional[str] = ..., resume_tokens: _Optional[int] = ...) -> None: ...

class CancelAssignment(_message.Message):
    __slots__ = ("ref", "reason")
    REF_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ref: AttemptRef
    reason: str
    def __init__(self, ref: _Optional[_Union[AttemptRef, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class PowerMode(_message.Message):
    __slots__ = ("site", "mining_mw", "ai_mw", "curtailed_mw", "reason")
    SITE_FIELD_NUMBER: _ClassVar[int]
    MINING_MW_FIELD_NUMBER: _ClassVar[int]
    AI_MW_FIELD_NUMBER: _ClassVar[int]
    CURTAILED_MW_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    site: str
    mining_mw: float
    ai_mw: float
    curtailed_mw: float
    reason: str
    def __init__(self, site: _Optional[str] = ..., mining_mw: _Optional[float] = ..., ai_mw: _Optional[float] = ..., curtailed_mw: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class LoadModel(_message.Message):
    __slots__ = ("model", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class UnloadModel(_message.Message):
    __slots__ = ("model", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class OutcomeAck(_message.Message):
    __slots__ = ("ref", "accepted", "reason")
    REF_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ref: AttemptRef
    accepted: bool
    reason: str
    def __init__(self, ref: _Optional[_Union[AttemptRef, _Mapping]] = ..., accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class SchedulerMessage(_message.Message):
    __slots__ = ("welcome", "assign", "cancel", "power_mode", "ack", "load_model", "unload_model", "epoch")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ASSIGN_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    POWER_MODE_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    LOAD_MODEL_FIELD_NUMBER: _ClassVar[int]
    UNLOAD_MODEL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    assign: Assignment
    cancel: CancelAssignment
    power_mode: PowerMode
    ack: OutcomeAck
    load_model: LoadModel
    unload_model: UnloadModel
    epoch: int
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., assign: _Optional[_Union[Assignment, _Mapping]] = ..., cancel: _Optional[_Union[CancelAssignment, _Mapping]] = ..., power_mode: _Optional[_Union[PowerMode, _Mapping]] = ..., ack: _Optional[_Union[OutcomeAck, _Mapping]] = ..., load_model: _Optional[_Union[LoadModel, _Mapping]] = ..., unload_model: _Optional[_Union[UnloadModel, _Mapping]] = ..., epoch: _Optional[int] = ...) -> None: ...
