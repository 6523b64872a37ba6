"""The OpenAI-compatible HTTP API: the wire format (`schema`), the front (`front`) and the Batch
API (`batches`)."""
