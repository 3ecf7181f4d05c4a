"""A real SMTP server for tests (plt_kernel::testing::smtp), on aiosmtpd (Debian: python3-aiosmtpd).

Listens on 127.0.0.1 (a free port), prints the port on stdout once it accepts connections, and
writes every message it accepts to <out>/<n>.json: envelope, whether the connection was
encrypted (STARTTLS or TLS from the start), whether and as whom the client authenticated, the
EHLO name, the message as received and its subject, from, to and body decoded. Exits when its standard input closes.

usage: smtp_server.py OUT [--tls none|starttls|tls] [--cert PEM --key PEM] [--auth USER:PASS]
  --tls starttls  offers STARTTLS and refuses mail before it (require_starttls)
  --tls tls       TLS from the first byte
  --auth          offers AUTH PLAIN/LOGIN (only over TLS) and refuses mail without it
"""

import argparse
import asyncio
import email
import email.policy
import itertools
import json
import os
import ssl
import sys
import threading

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Recorder:
    def __init__(self, out):
        self.out = out
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        transport = server.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        auth = session.auth_data if isinstance(session.auth_data, LoginPassword) else None
        message = email.message_from_bytes(
            envelope.original_content, policy=email.policy.default
        )
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": ssl_object is not None,
            "tls_version": ssl_object.version() if ssl_object is not None else None,
            "authenticated": bool(session.authenticated),
            "login": auth.login.decode() if auth else None,
            "hello": session.host_name,
            "content": envelope.original_content.decode("utf-8", errors="replace"),
            # Decoded as a mail reader would (RFC 2047 headers, transfer encodings).
            "subject": str(message["subject"]),
            "from": str(message["from"]),
            "to": str(message["to"]),
            "body": message.get_content() if not message.is_multipart() else None,
        }
        n = next(self.counter)
        tmp = os.path.join(self.out, f".{n}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.out, f"{n}.json"))
        return "250 2.0.0 accepted"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--tls", choices=["none", "starttls", "tls"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--auth")
    a = p.parse_args()

    context = None
    if a.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(a.cert, a.key)

    kwargs = {"hostname": "smtp.test", "enable_SMTPUTF8": True}
    if a.tls == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)
    if a.auth:
        user, password = a.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == user
                and auth_data.password.decode() == password
            )
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        kwargs.update(
            authenticator=authenticator, auth_required=True, auth_require_tls=True
        )

    handler = Recorder(a.out)

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, **kwargs),
            host="127.0.0.1",
            port=0,
            ssl=context if a.tls == "tls" else None,
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    # The test holds our stdin: when it ends (or dies), so do we.
    threading.Thread(
        target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True
    ).start()
    asyncio.run(serve())


if __name__ == "__main__":
    main()
