"""The live Bitcoin network: difficulty, subsidy and fees from a node or a mempool-style API, and
BTC/USD from a spot-price API. The hashprice is computed from them (`assemble_snapshot`), as the
replay computes it from the shipped files.

- `BitcoinCoreRpc`: a Bitcoin Core node's JSON-RPC. `getblockchaininfo` gives the difficulty and
  the tip; one batched call of `getblockstats` over the last `fee_blocks` blocks gives their fees
  and the subsidy (both in satoshis). Auth is HTTP basic, with a user and password or the node's
  cookie file (`__cookie__:<secret>`, rewritten at every node start, so it is read at every poll).
- `MempoolApi`: a mempool-style REST API (mempool.space or a self-hosted instance):
  `GET {base}/v1/blocks` lists the latest blocks with `difficulty` and `extras.totalFees` /
  `extras.reward` in satoshis.
- `SpotPriceApi`: BTC/USD in the shape of Coinbase's spot endpoint,
  `{"data": {"amount": "65000.12", "base": "BTC", "currency": "USD"}}`.

Values are stamped with the tip block's time (the chain state they describe), so a node that
stalls, or is still syncing, lets the difficulty go stale instead of pricing on an old chain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from scheduler.core.market import Quote
from scheduler.feeds.live.poller import Fetched, SourceError, get_bytes

SATS_PER_BTC = 1e8
DEFAULT_FEE_BLOCKS = 12  # two hours of blocks: the fee mean moves with the mempool, not per block
DEFAULT_TIMEOUT_S = 10.0


def _number(doc: Any, key: str, where: str) -> float:
    value = doc.get(key) if isinstance(doc, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SourceError(f"{where}: {key!r} missing or not a number")
    return float(value)


class BitcoinCoreRpc:
    """Difficulty, subsidy and fees from a Bitcoin Core node's JSON-RPC."""

    def __init__(
        self,
        url: str,
        user: str | None = None,
        password: str | None = None,
        cookie_file: str | None = None,
        fee_blocks: int = DEFAULT_FEE_BLOCKS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        name: str = "bitcoin-core",
    ) -> None:
        if fee_blocks < 1:
            raise ValueError(f"fee_blocks must be >= 1, got {fee_blocks}")
        self.url = url
        self.user = user
        self.password = password
        self.cookie_file = cookie_file
        self.fee_blocks = fee_blocks
        self.timeout_s = timeout_s
        self.name = name

    def _auth(self) -> tuple[str, str] | None:
        if self.cookie_file:
            try:
                user, _, secret = Path(self.cookie_file).read_text().strip().partition(":")
            except OSError as exc:
                raise SourceError(
                    f"{self.name}: cannot read the cookie file {self.cookie_file}: {exc.strerror}"
                ) from None
            return user, secret
        if self.user is not None:
            return self.user, self.password or ""
        return None

    def _call(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        body = [
            {"jsonrpc": "1.0", "id": i, "method": method, "params": params}
            for i, (method, params) in enumerate(calls)
        ]
        try:
            response = httpx.post(self.url, json=body, auth=self._auth(), timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise SourceError(f"{self.name}: {self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 401:
            raise SourceError(f"{self.name}: {self.url} refused the RPC credentials (401)")
        try:
            replies = json.loads(response.text)
        except ValueError:
            raise SourceError(
                f"{self.name}: {self.url} answered {response.status_code} without JSON"
            ) from None
        if not isinstance(replies, list) or len(replies) != len(calls):
            raise SourceError(f"{self.name}: {self.url}: not a reply to a batch of {len(calls)}")
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        out = []
        for i, (method, _) in enumerate(calls):
            reply = by_id.get(i)
            if reply is None:
                raise SourceError(f"{self.name}: no reply to {method}")
            if reply.get("error"):
                error = reply["error"]
                message = error.get("message") if isinstance(error, dict) else error
                raise SourceError(f"{self.name}: {method} failed: {message}")
            out.append(reply.get("result"))
        return out

    def fetch(self, now_s: float) -> Fetched:
        (info,) = self._call([("getblockchaininfo", [])])
        where = f"{self.name}: getblockchaininfo"
        if not isinstance(info, dict):
            raise SourceError(f"{where}: not an object")
        if info.get("initialblockdownload") is True:
            raise SourceError(f"{self.name}: the node is still syncing (initial block download)")
        difficulty = _number(info, "difficulty", where)
        tip = int(_number(info, "blocks", where))
        heights = [h for h in range(tip, tip - self.fee_blocks, -1) if h >= 0]
        stats = self._call(
            [("getblockstats", [h, ["height", "time", "totalfee", "subsidy"]]) for h in heights]
        )
        fees_btc = []
        tip_time_s = None
        subsidy_btc = None
        for h, block in zip(heights, stats, strict=True):
            where = f"{self.name}: getblockstats {h}"
            fees_btc.append(_number(block, "totalfee", where) / SATS_PER_BTC)
            if h == tip:
                tip_time_s = _number(block, "time", where)
                subsidy_btc = _number(block, "subsidy", where) / SATS_PER_BTC
        assert tip_time_s is not None and subsidy_btc is not None
        as_of_s = min(tip_time_s, now_s)
        return Fetched(
            difficulty=Quote(difficulty, as_of_s, self.name),
            fees_btc_per_block=Quote(sum(fees_btc) / len(fees_btc), as_of_s, self.name),
            subsidy_btc=Quote(subsidy_btc, as_of_s, self.name),
        )


class MempoolApi:
    """Difficulty, subsidy and fees from a mempool-style REST API (`GET {base}/v1/blocks`)."""

    def __init__(
        self, base_url: str, fee_blocks: int = DEFAULT_FEE_BLOCKS,
        timeout_s: float = DEFAULT_TIMEOUT_S, name: str = "mempool",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.fee_blocks = fee_blocks
        self.timeout_s = timeout_s
        self.name = name

    def fetch(self, now_s: float) -> Fetched:
        url = f"{self.base_url}/v1/blocks"
        blocks = _get_json(url, self.timeout_s, self.name)
        if not isinstance(blocks, list) or not blocks:
            raise SourceError(f"{self.name}: {url}: no blocks in the reply")
        blocks = sorted(
            (b for b in blocks if isinstance(b, dict)),
            key=lambda b: b.get("height", -1) if isinstance(b.get("height"), int) else -1,
            reverse=True,
        )[: self.fee_blocks]
        tip = blocks[0]
        where = f"{self.name}: block {tip.get('height')}"
        fees_btc = []
        for block in blocks:
            fees_btc.append(
                _number(block.get("extras"), "totalFees", f"{self.name}: block extras")
                / SATS_PER_BTC
            )
        extras = tip.get("extras")
        reward_btc = _number(extras, "reward", f"{where} extras") / SATS_PER_BTC
        as_of_s = min(_number(tip, "timestamp", where), now_s)
        return Fetched(
            difficulty=Quote(_number(tip, "difficulty", where), as_of_s, self.name),
            fees_btc_per_block=Quote(sum(fees_btc) / len(fees_btc), as_of_s, self.name),
            subsidy_btc=Quote(reward_btc - fees_btc[0], as_of_s, self.name),
        )


class SpotPriceApi:
    """BTC/USD from a Coinbase-shaped spot endpoint."""

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 name: str = "btc-spot") -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.name = name

    def fetch(self, now_s: float) -> Fetched:
        doc = _get_json(self.url, self.timeout_s, self.name)
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, dict):
            raise SourceError(f"{self.name}: {self.url}: no 'data' object in the reply")
        if data.get("base", "BTC") != "BTC" or data.get("currency", "USD") != "USD":
            raise SourceError(
                f"{self.name}: {self.url} quotes {data.get('base')}/{data.get('currency')},"
                " not BTC/USD"
            )
        try:
            amount = float(data["amount"])
        except (KeyError, TypeError, ValueError):
            raise SourceError(
                f"{self.name}: {self.url}: 'amount' missing or not a number"
            ) from None
        return Fetched(btc_usd=Quote(amount, now_s, self.name))


class HashpriceIndexApi:
    """A published hashprice index, to compare ours with (never to price on): the number at
    `field` (a dotted path) of a JSON document, times `scale` to make USD per PH/s per day (1000
    for an index quoted per TH/s)."""

    def __init__(self, url: str, field: str = "hashprice_usd_per_phs_day", scale: float = 1.0,
                 timeout_s: float = DEFAULT_TIMEOUT_S, name: str = "hashprice-index") -> None:
        if not scale > 0:
            raise ValueError(f"hashprice index scale must be > 0, got {scale!r}")
        self.url = url
        self.path = [part for part in field.split(".") if part]
        self.scale = scale
        self.timeout_s = timeout_s
        self.name = name

    def fetch(self, now_s: float) -> Fetched:
        node: Any = _get_json(self.url, self.timeout_s, self.name)
        for part in self.path:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise SourceError(f"{self.name}: {self.url}: no {'.'.join(self.path)!r}")
        try:
            value = float(node)
        except (TypeError, ValueError):
            raise SourceError(
                f"{self.name}: {self.url}: {'.'.join(self.path)!r} is not a number"
            ) from None
        return Fetched(hashprice_usd_per_phs_day=Quote(value * self.scale, now_s, self.name))


def _get_json(url: str, timeout_s: float, name: str) -> Any:
    raw = get_bytes(url, timeout_s, name, follow_redirects=False)
    try:
        return json.loads(raw)
    except ValueError:
        raise SourceError(f"{name}: {url}: the reply is not JSON") from None
