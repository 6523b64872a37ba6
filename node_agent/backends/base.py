"""The interface every inference backend implements, and the data it returns.

The agent's runtime calls backends; backends know nothing of gRPC or the scheduler. A backend is
synchronous and may block (the runtime runs it in a worker thread); generation streams its tokens
through `on_token` so the customer sees them as they come.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from scheduler.core.prefix import prompt_prefix_blocks


@dataclass(frozen=True)
class EmbedOutput:
    vectors: list[list[float]]
    prompt_tokens: int


@dataclass(frozen=True)
class GenerateOutput:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length" (or "cancelled")
    # Of prompt_tokens, those not evaluated: the engine started from a prompt it had kept.
    cached_prompt_tokens: int = 0


@dataclass(frozen=True)
class GenerateParams:
    prompt: str
    max_tokens: int  # of the whole answer, resumed tokens included
    temperature: float = 0.0
    seed: int = 0
    # A generation moved from another node: continue after this text, of which `resume_tokens`
    # tokens were produced there (and count towards max_tokens). A backend that cannot resume
    # (`can_resume` False) is never sent one.
    resume_text: str = ""
    resume_tokens: int = 0
    # A whole conversation, (role, content) pairs, for the chat template instead of `prompt`.
    messages: tuple[tuple[str, str], ...] = ()
    # `prompt` is the exact text to continue: no chat template (OpenAI's /v1/completions).
    raw_prompt: bool = False
    stop: tuple[str, ...] = ()  # the customer's stop strings, beside the template's own

    @property
    def prefix_blocks(self) -> tuple[int, ...]:
        """The prompt's prefix block chain (scheduler/core/prefix.py), as the scheduler computed
        it for routing: a backend that keeps the prompt's state reports it under these."""
        return prompt_prefix_blocks(self.messages, self.prompt, self.raw_prompt)

    def chat(self) -> list[dict[str, str]]:
        """The conversation the chat template renders: the messages, or the prompt as the one
        user message."""
        if self.messages:
            return [{"role": role, "content": content} for role, content in self.messages]
        return [{"role": "user", "content": self.prompt}]

    @property
    def prompt_text(self) -> str:
        """All the prompt's text, for estimates where a server reports no usage."""
        return "\n".join(c for _, c in self.messages) if self.messages else self.prompt


class Cancelled(Exception):
    """Raised by a backend when `should_stop()` turned true mid-job."""


@dataclass
class BackendInfo:
    models: list[str]
    kind: str = "cpu"
    memory_mb: int = 0
    extra: dict[str, str] = field(default_factory=dict)


class EmbeddingBackend(Protocol):
    model_name: str

    def embed(self, texts: list[str]) -> EmbedOutput: ...


class GenerationBackend(Protocol):
    model_name: str

    def generate(
        self,
        params: GenerateParams,
        on_token: Callable[[str], None],
        should_stop: Callable[[], bool],
    ) -> GenerateOutput: ...
