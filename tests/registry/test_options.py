"""Tests for :mod:`ddiscover.registry.options`: the ``--etcd-*`` options of ``twistd ddiscover``.

Each bad value stops the command with one line naming the option and the value (for a file,
its path).  The PEM files are made once with openssl, by
:class:`~tests.integration.etcd.ThrowawayPKI`.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.registry.access import Credentials, TLSFiles
from ddiscover.registry.options import EtcdAccess
from ddiscover.tap import Options
from tests.integration.etcd import ThrowawayPKI

HTTPS = ["--etcd", "https://127.0.0.1:2379"]


def access(args: list[str], environ: dict[str, str] | None = None) -> EtcdAccess:
    """The etcd access ``twistd ddiscover`` builds from ``args``."""
    options = Options({} if environ is None else environ)
    options.parseOptions(args)
    result: EtcdAccess = options.config.etcd_access
    return result


class OptionsTests(SynchronousTestCase):
    """The API choice, TLS files and credentials are checked where they are parsed."""

    root: str
    ca: str
    cert: str
    key: str
    other_key: str
    password_file: str

    @classmethod
    def setUpClass(cls) -> None:  # noqa: N802 (trial's name)
        cls.root = tempfile.mkdtemp(prefix="ddiscover-options-")
        pki = ThrowawayPKI(cls.root)
        cls.ca = pki.ca("ca")
        cls.cert, cls.key = pki.issue("client", "ca", "extendedKeyUsage=clientAuth")
        _, cls.other_key = pki.issue("other", "ca", "extendedKeyUsage=clientAuth")
        cls.password_file = os.path.join(cls.root, "password")
        with open(cls.password_file, "w") as f:
            f.write("from-file\n")

    @classmethod
    def tearDownClass(cls) -> None:  # noqa: N802 (trial's name)
        shutil.rmtree(cls.root)

    def refused(self, args: list[str], environ: dict[str, str] | None = None) -> str:
        """The one-line error ``args`` stop the command with."""
        error = self.assertRaises(usage.UsageError, access, args, environ)
        self.assertNotIn("\n", str(error))
        return str(error)

    def test_defaults(self) -> None:
        """Without ``--etcd-*`` options: the API is detected, no TLS files, no user."""
        self.assertEqual(access(["--etcd", "127.0.0.1:2379"]), EtcdAccess())

    def test_tls_files(self) -> None:
        """A CA, a certificate and its key are kept as given."""
        given = ["--etcd-cafile", self.ca, "--etcd-certfile", self.cert]
        self.assertEqual(
            access([*HTTPS, *given, "--etcd-keyfile", self.key]).tls,
            TLSFiles(self.ca, self.cert, self.key),
        )

    def test_bad_tls_files(self) -> None:
        """A missing, unreadable, non-PEM or mismatched file names its option and path."""
        missing = os.path.join(self.root, "missing.pem")
        cases = [
            (
                ["--etcd-cafile", missing],
                f"--etcd-cafile {missing!r} cannot be read: No such file or directory",
            ),
            (
                ["--etcd-cafile", self.root],
                f"--etcd-cafile {self.root!r} cannot be read: Is a directory",
            ),
            (["--etcd-cafile", self.key], f"--etcd-cafile {self.key!r} holds no PEM certificate"),
            (
                ["--etcd-certfile", missing, "--etcd-keyfile", self.key],
                f"--etcd-certfile {missing!r} cannot be read: No such file or directory",
            ),
            (
                ["--etcd-certfile", self.key, "--etcd-keyfile", self.key],
                f"--etcd-certfile {self.key!r} holds no PEM certificate",
            ),
            (
                ["--etcd-certfile", self.cert, "--etcd-keyfile", missing],
                f"--etcd-keyfile {missing!r} cannot be read: No such file or directory",
            ),
            (
                ["--etcd-certfile", self.cert, "--etcd-keyfile", self.root],
                f"--etcd-keyfile {self.root!r} cannot be read: Is a directory",
            ),
            (
                ["--etcd-certfile", self.cert, "--etcd-keyfile", self.ca],
                f"--etcd-keyfile {self.ca!r} holds no PEM private key",
            ),
            (
                ["--etcd-certfile", self.cert, "--etcd-keyfile", self.other_key],
                f"--etcd-keyfile {self.other_key!r} is not the key of {self.cert!r}",
            ),
            (
                ["--etcd-certfile", self.cert],
                f"--etcd-certfile {self.cert!r} holds no PEM private key",
            ),
            (["--etcd-keyfile", self.key], "--etcd-keyfile needs --etcd-certfile"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                self.assertEqual(self.refused([*HTTPS, *args]), message)

    def test_tls_files_need_https(self) -> None:
        """TLS files with a plain http:// endpoint are a mistake, named by the endpoint."""
        args = ["--etcd", "https://a:2379,b:2379", "--etcd-cafile", self.ca]
        self.assertEqual(
            self.refused(args), "TLS files are given but http://b:2379 is not https://"
        )

    def test_api(self) -> None:
        """``--etcd-api`` is auto, v2 or v3."""
        for api in ("auto", "v2", "v3"):
            with self.subTest(api=api):
                self.assertEqual(access([*HTTPS, "--etcd-api", api]).api, api)
        self.assertEqual(
            self.refused([*HTTPS, "--etcd-api", "v4"]),
            "--etcd-api must be one of auto, v2, v3, got 'v4'",
        )

    def test_password_sources(self) -> None:
        """The password comes from the file, else the command line, else $ETCD_PASSWORD."""
        user = [*HTTPS, "--etcd-user", "root"]
        from_file = ["--etcd-password-file", self.password_file, "--etcd-password", "argv"]
        self.assertEqual(
            access([*user, *from_file], {"ETCD_PASSWORD": "env"}).credentials,
            Credentials("root", "from-file"),
        )
        self.assertEqual(
            access([*user, "--etcd-password", "argv"], {"ETCD_PASSWORD": "env"}).credentials,
            Credentials("root", "argv"),
        )
        self.assertEqual(
            access(user, {"ETCD_PASSWORD": "env"}).credentials, Credentials("root", "env")
        )

    def test_bad_credentials(self) -> None:
        """A user without a password, a password without a user, an unreadable password file."""
        missing = os.path.join(self.root, "missing")
        cases = [
            (
                ["--etcd-user", "root"],
                "--etcd-user needs a password: --etcd-password-file, $ETCD_PASSWORD "
                "or --etcd-password",
            ),
            (["--etcd-password", "x"], "an etcd password is given without --etcd-user"),
            (
                ["--etcd-user", "root", "--etcd-password-file", missing],
                f"--etcd-password-file {missing!r} cannot be read: "
                f"[Errno 2] No such file or directory: {missing!r}",
            ),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                self.assertEqual(self.refused([*HTTPS, *args]), message)
