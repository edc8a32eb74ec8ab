"""A throwaway TLS CA and a server certificate it signed, made with openssl."""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.common import DevstackError, require_commands, tail


@dataclass(frozen=True)
class TlsFiles:
    """A local CA and a server certificate it signed."""

    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path, *, dns: Sequence[str] = ("localhost",),
             ips: Sequence[str] = ("127.0.0.1", "::1"), days: int = 30,
             openssl: str | None = None) -> TlsFiles:
    """Generate ``ca.pem`` (a throwaway CA) and ``tls.crt``/``tls.key`` signed by it.

    Clients trust ``ca.pem``; the CA's private key is deleted once the certificate is signed,
    so nothing else can ever be signed with it. Private keys are written 0600.
    """
    binary = openssl or require_commands({"openssl": "openssl"})["openssl"]
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "tls.crt", directory / "tls.key")
    san = ",".join([*(f"DNS:{d}" for d in dns), *(f"IP:{i}" for i in ips)])
    with tempfile.TemporaryDirectory(prefix="tls-", dir=directory) as tmp:
        work = Path(tmp)
        ca_key = work / "ca.key"
        csr = work / "tls.csr"
        ext = work / "ext.cnf"
        ext.write_text(
            f"subjectAltName={san}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n"
        )
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        old_umask = os.umask(0o077)
        try:
            steps = [
                [binary, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(files.ca),
                 "-days", str(days), "-subj", "/O=authloyalty/CN=authloyalty local CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                [binary, "req", "-new", *ec, "-keyout", str(files.key), "-out", str(csr),
                 "-subj", "/O=authloyalty/CN=" + (dns[0] if dns else "localhost")],
                [binary, "x509", "-req", "-in", str(csr), "-CA", str(files.ca),
                 "-CAkey", str(ca_key), "-set_serial", str(secrets.randbits(63)),
                 "-days", str(days), "-extfile", str(ext), "-out", str(files.cert)],
            ]
            for cmd in steps:
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise DevstackError(f"{' '.join(cmd[:3])} failed:\n{tail(proc.stderr, 30)}")
        finally:
            os.umask(old_umask)
    files.key.chmod(0o600)
    files.ca.chmod(0o644)
    files.cert.chmod(0o644)
    return files
