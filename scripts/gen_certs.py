"""Make the certificates for hashserve's gRPC TLS: a CA, a server certificate, agent client certs.

    python scripts/gen_certs.py --out certs --server-name scheduler.example.com --agent tx-1-gpu-07

writes into --out:
    ca.pem, ca.key               the CA (created once; reused by later runs to sign more agents)
    server.pem, server.key       the scheduler's certificate: SAN localhost, 127.0.0.1, ::1 and
                                 every --server-name (DNS names or IP addresses)
    agents/<id>.pem, <id>.key    one client certificate per --agent, common name = the agent id
Keys are P-256 (ECDSA), PKCS#8 PEM, mode 0600. Existing leaf files are kept unless --force.

It uses the `cryptography` package when it is installed and the `openssl` command otherwise
(--backend chooses). This script is for labs, demos and small fleets; a production fleet may issue
the same shapes of certificate from its own CA (cert-manager, Vault, step-ca): see docs/tls.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
CA_NAME = "hashserve CA"


@dataclass(frozen=True)
class Leaf:
    """One certificate to issue from the CA."""

    common_name: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    server: bool  # serverAuth if true, clientAuth if false
    cert_path: Path
    key_path: Path


def split_names(names: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(DNS names, IP addresses), each de-duplicated in order."""
    dns: list[str] = []
    ips: list[str] = []
    for name in names:
        try:
            ip = str(ipaddress.ip_address(name))
        except ValueError:
            if name not in dns:
                dns.append(name)
        else:
            if ip not in ips:
                ips.append(ip)
    return tuple(dns), tuple(ips)


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start: a key is never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


class CryptographyBackend:
    """Issues with the `cryptography` package (imported only when chosen)."""

    def __init__(self) -> None:
        import cryptography  # noqa: F401  (fails early when the package is absent)

    def make_ca(self, cert_path: Path, key_path: Path, days: int) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write_private(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, leaf: Leaf, ca_cert: Path, ca_key: Path, days: int) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
        signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
        if not isinstance(signer, ec.EllipticCurvePrivateKey):
            raise SystemExit(f"{ca_key}: expected an EC key")
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in leaf.dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in leaf.ip_addresses]
        usage = ExtendedKeyUsageOID.SERVER_AUTH if leaf.server else ExtendedKeyUsageOID.CLIENT_AUTH
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, leaf.common_name)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(signer, hashes.SHA256())
        _write_private(
            leaf.key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        leaf.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class OpensslBackend:
    """Issues with the `openssl` command (1.1.1 or 3.x), from a config file of its own."""

    def __init__(self) -> None:
        found = shutil.which("openssl")
        if found is None:
            raise SystemExit("neither the cryptography package nor the openssl command is here")
        self.openssl = found

    def _run(self, *args: str) -> None:
        done = subprocess.run([self.openssl, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"openssl {args[0]} failed:\n{done.stderr.strip()}")

    def make_ca(self, cert_path: Path, key_path: Path, days: int) -> None:
        # Our own config: the system's openssl.cnf may add extensions we do not want.
        config = (
            "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ca\n"
            f"[dn]\nCN = {CA_NAME}\n"
            "[ca]\nbasicConstraints = critical, CA:TRUE, pathlen:0\n"
            "keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n"
        )
        with tempfile.TemporaryDirectory() as tmp:
            cnf = Path(tmp, "ca.cnf")
            cnf.write_text(config)
            key_tmp = Path(tmp, "ca.key")
            self._run(
                "req", "-x509", "-new", "-config", str(cnf), "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-sha256",
                "-days", str(days), "-set_serial", _serial(),
                "-keyout", str(key_tmp), "-out", str(cert_path),
            )  # fmt: skip
            _write_private(key_path, key_tmp.read_bytes())

    def issue(self, leaf: Leaf, ca_cert: Path, ca_key: Path, days: int) -> None:
        alt = [f"DNS:{n}" for n in leaf.dns_names] + [f"IP:{ip}" for ip in leaf.ip_addresses]
        usage = "serverAuth" if leaf.server else "clientAuth"
        extensions = (
            "[leaf]\nbasicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyAgreement\n"
            f"extendedKeyUsage = {usage}\nauthorityKeyIdentifier = keyid\n"
            + (f"subjectAltName = {', '.join(alt)}\n" if alt else "")
        )
        with tempfile.TemporaryDirectory() as tmp:
            cnf = Path(tmp, "leaf.cnf")
            cnf.write_text(
                "[req]\ndistinguished_name = dn\nprompt = no\n"
                f"[dn]\nCN = {leaf.common_name}\n" + extensions
            )
            key_tmp, csr = Path(tmp, "leaf.key"), Path(tmp, "leaf.csr")
            self._run(
                "req", "-new", "-config", str(cnf), "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-sha256",
                "-keyout", str(key_tmp), "-out", str(csr),
            )  # fmt: skip
            self._run(
                "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
                "-set_serial", _serial(), "-days", str(days), "-sha256",
                "-extfile", str(cnf), "-extensions", "leaf", "-out", str(leaf.cert_path),
            )  # fmt: skip
            _write_private(leaf.key_path, key_tmp.read_bytes())


def _serial() -> str:
    # 127 random bits: positive, unique in practice (RFC 5280 allows up to 20 octets).
    return f"0x{secrets.randbits(127) | (1 << 126):x}"


Backend = CryptographyBackend | OpensslBackend


def choose_backend(name: str) -> Backend:
    if name == "openssl":
        return OpensslBackend()
    try:
        return CryptographyBackend()
    except ImportError:
        if name == "cryptography":
            raise SystemExit("the cryptography package is not installed") from None
        return OpensslBackend()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("certs"), help="folder to write into")
    p.add_argument(
        "--server-name", action="append", default=[],
        help="extra DNS name or IP address of the scheduler; repeatable",
    )  # fmt: skip
    p.add_argument(
        "--agent", action="append", default=[], help="agent id to issue a client cert for"
    )
    p.add_argument("--no-server", action="store_true", help="issue no server certificate")
    p.add_argument("--days", type=int, default=365, help="leaf validity (default 365)")
    p.add_argument("--ca-days", type=int, default=3650, help="CA validity (default 3650)")
    p.add_argument("--force", action="store_true", help="overwrite existing leaf certificates")
    p.add_argument("--backend", choices=("auto", "cryptography", "openssl"), default="auto")
    args = p.parse_args(argv)
    for agent in args.agent:
        if not AGENT_ID.match(agent):
            p.error(f"agent id {agent!r}: letters, digits, '.', '_' and '-' only (max 63)")
    if args.days <= 0 or args.ca_days <= 0:
        p.error("--days and --ca-days must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    backend = choose_backend(args.backend)
    out: Path = args.out
    (out / "agents").mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = out / "ca.pem", out / "ca.key"
    if ca_cert.exists() != ca_key.exists():
        raise SystemExit(f"{out}: ca.pem and ca.key must both exist or both be absent")
    if ca_cert.exists():
        print(f"reusing CA {ca_cert}")
    else:
        backend.make_ca(ca_cert, ca_key, args.ca_days)
        print(f"wrote CA {ca_cert} (keep {ca_key} offline in production)")

    leaves: list[Leaf] = []
    if not args.no_server:
        dns, ips = split_names([*DEFAULT_SERVER_NAMES, *args.server_name])
        common_name = args.server_name[0] if args.server_name else "localhost"
        leaves.append(Leaf(common_name, dns, ips, True, out / "server.pem", out / "server.key"))
    for agent in args.agent:
        cert, key = out / "agents" / f"{agent}.pem", out / "agents" / f"{agent}.key"
        leaves.append(Leaf(agent, (agent,), (), False, cert, key))
    for leaf in leaves:
        if leaf.cert_path.exists() and not args.force:
            print(f"kept {leaf.cert_path} (exists; --force to replace)")
            continue
        backend.issue(leaf, ca_cert, ca_key, args.days)
        print(f"wrote {leaf.cert_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
