"""llama-cpp-python's OpenAI-compatible server, on the portable engine.

`python -m node_agent.backends.llama_server --model X.gguf ...` takes the same flags as
`python -m llama_cpp.server`. The portable build loads no CPU backend by itself, so this first
loads the one this machine may run (`llama_engine.load_engine`), then hands over to the server.
Behind an agent: `--backend NAME=openai:http://127.0.0.1:PORT/v1`.
"""

from __future__ import annotations


def main() -> None:
    from node_agent.backends.llama_engine import load_engine

    load_engine()
    from llama_cpp.server.__main__ import main as serve

    serve()


if __name__ == "__main__":
    main()
