"""A scripted SMTP next hop for outbound tests: it answers from a table
instead of from policy, so a test can make any command get any reply.

Replies are chosen by the address's local part prefix:
  MAIL FROM:<bad-mail...>   -> mail_reject   (else 250)
  RCPT TO:<ok-...>          -> 250
  RCPT TO:<grey-...>        -> 450 (greylisting)
  RCPT TO:<bad-...>         -> 550
  RCPT TO:<bye-...>         -> 421, then the connection is closed
AUTH PLAIN/LOGIN is offered when auth_mechs is set and checked against account.
and the end of data (the final dot, or BDAT LAST) by the message's
"X-Final:" header: 250, 451, 554, or "drop" (close without a reply).
With no recipient accepted, DATA and BDAT get Postfix's
"554 5.5.1 Error: no valid recipients" (and BDAT's bytes are read first).
Every session's commands and every accepted message are recorded, and how
many sessions were open at once (max_active) and waiting for a RCPT reply
at once (max_in_rcpt); rcpt_delay slows RCPT replies.
data_delay holds the data unread for a while (the sender's writes
then block). With tls=(cert, key) it offers STARTTLS; pad_replies=N makes the EHLO reply
and the end-of-data reply multi-line, about N bytes, written in one write
(one TLS record up to 16 KiB); my_name is the name it greets and answers
EHLO with."""
import re
import socket
import socketserver
import threading
import time

from harness import on_cleanup, port_open, wait_for

RCPT_REPLIES = {
    "ok-": "250 2.1.5 Ok",
    "grey-": "450 4.2.0 <%s>: Recipient address rejected: Greylisted, try again later",
    "bad-": "550 5.1.1 <%s>: Recipient address rejected: User unknown",
    "bye-": "421 4.3.2 Service shutting down, closing transmission channel",
}
FINAL_REPLIES = {
    "250": "250 2.0.0 Ok: queued as SCRIPTED1",
    "451": "451 4.7.1 Content scanner unavailable, try again later",
    "554": "554 5.7.1 Message content rejected",
}
NO_VALID = "554 5.5.1 Error: no valid recipients"


class _Closed(Exception):
    pass


class _Session(socketserver.StreamRequestHandler):
    timeout = 30

    def reply(self, text):
        self.server.owner.log.append(("S", text))
        self.request.sendall(text.encode() + b"\r\n")

    def reply_lines(self, code, lines, pad=0):
        """One multi-line reply in one write, padded with about pad bytes
        of extra lines before the last."""
        fill = ["X-PAD-%05d-%s" % (i, "p" * 60) for i in range(pad // 76)]
        lines = lines[:-1] + fill + lines[-1:]
        text = "".join("%s%s%s\r\n" % (code, "-" if i < len(lines) - 1 else " ", l) for i, l in enumerate(lines))
        self.server.owner.log.append(("S", text))
        self.request.sendall(text.encode())

    def starttls(self, owner):
        self.reply("220 2.0.0 Ready to start TLS")
        self.request = owner.tls_ctx.wrap_socket(self.request, server_side=True)
        self.rfile = self.request.makefile("rb")
        self.tls = True

    def line(self):
        raw = self.rfile.readline(4096)
        if not raw:
            raise _Closed()
        text = raw.rstrip(b"\r\n").decode(errors="replace")
        self.server.owner.log.append(("C", text))
        return text

    def handle(self):
        owner = self.server.owner
        with owner.lock:
            owner.sessions += 1
            owner.active += 1
            owner.max_active = max(owner.max_active, owner.active)
        try:
            self.tls = False
            self.reply("220 %s ESMTP" % owner.my_name)
            self.session(owner)
        except (_Closed, OSError):
            pass
        finally:
            with owner.lock:
                owner.active -= 1

    def session(self, owner):
        sender, accepted = None, []
        self.bdat_buf = b""
        while True:
            cmd = self.line()
            verb = cmd.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                owner.helos.append(cmd.split(" ", 1)[1] if " " in cmd else "")
                owner.peers.append(self.client_address[0])
                exts = ["PIPELINING"] * owner.pipelining + ["CHUNKING"] * owner.chunking + ["8BITMIME", "SIZE 0"]
                exts += ["AUTH " + owner.auth_mechs] if owner.auth_mechs else []
                exts += ["STARTTLS"] if owner.tls_ctx and not self.tls else []
                self.reply_lines("250", [owner.my_name] + exts, owner.pad_replies)
            elif verb == "STARTTLS" and owner.tls_ctx and not self.tls:
                self.starttls(owner)
                sender, accepted = None, []
            elif verb == "MAIL":
                addr = re.search(r"<([^>]*)>", cmd).group(1)
                if addr.startswith("bad-mail"):
                    self.reply(owner.mail_reject)
                else:
                    sender, accepted = addr, []
                    self.reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                addr = re.search(r"<([^>]*)>", cmd).group(1)
                local = addr.split("@")[0]
                rep = next((v for k, v in RCPT_REPLIES.items() if local.startswith(k)), RCPT_REPLIES["ok-"])
                if "%s" in rep:
                    rep = rep % addr
                if sender is None:
                    rep = "503 5.5.1 Error: need MAIL command"
                with owner.lock:
                    owner.in_rcpt += 1
                    owner.max_in_rcpt = max(owner.max_in_rcpt, owner.in_rcpt)
                time.sleep(owner.rcpt_delay)
                with owner.lock:
                    owner.in_rcpt -= 1
                self.reply(rep)
                if rep.startswith("421"):
                    return
                if rep.startswith("2"):
                    accepted.append(addr)
            elif verb == "DATA":
                if not accepted:
                    self.reply(NO_VALID if sender else "503 5.5.1 Error: need RCPT command")
                    continue
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                time.sleep(owner.data_delay)
                data = b""
                while True:
                    raw = self.rfile.readline(65536)
                    if not raw:
                        raise _Closed()
                    if raw == b".\r\n":
                        break
                    data += raw[1:] if raw.startswith(b".") else raw
                if not self.finish_message(owner, sender, accepted, data):
                    return
                sender, accepted = None, []
            elif verb == "BDAT":
                m = re.match(r"BDAT (\d+)( LAST)?$", cmd, re.I)
                size, last = int(m.group(1)), bool(m.group(2))
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise _Closed()
                if not accepted:
                    self.reply(NO_VALID)
                    continue
                self.bdat_buf += chunk
                if not last:
                    self.reply("250 2.0.0 Ok: %d bytes" % size)
                    continue
                data, self.bdat_buf = self.bdat_buf, b""
                if not self.finish_message(owner, sender, accepted, data):
                    return
                sender, accepted = None, []
            elif verb == "AUTH":
                self.auth(owner, cmd)
            elif verb == "RSET":
                sender, accepted = None, []
                self.reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                self.reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                owner.quits += 1
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("502 5.5.2 Error: command not recognized")

    def auth(self, owner, cmd):
        """AUTH PLAIN (initial response) or LOGIN; logins land in owner.logins."""
        import base64
        parts = cmd.split()
        if parts[1].upper() == "PLAIN" and len(parts) == 3:
            _, user, password = base64.b64decode(parts[2]).decode().split("\0")
        elif parts[1].upper() == "LOGIN":
            self.reply("334 VXNlcm5hbWU6")
            user = base64.b64decode(self.line()).decode()
            self.reply("334 UGFzc3dvcmQ6")
            password = base64.b64decode(self.line()).decode()
        else:
            self.reply("504 5.5.4 Unrecognized authentication type")
            return
        owner.logins.append((parts[1].upper(), user, password))
        self.reply("235 2.7.0 Authentication successful" if (user, password) == owner.account
                   else "535 5.7.8 Error: authentication failed: bad credentials")

    def finish_message(self, owner, sender, accepted, data):
        """Answer the end of data from X-Final:; False when the session ends."""
        m = re.search(rb"^X-Final: (\S+)", data, re.M)
        final = m.group(1).decode() if m else "250"
        if final == "drop":
            owner.dropped += 1
            self.request.shutdown(socket.SHUT_RDWR)
            return False
        rep = FINAL_REPLIES[final]
        if rep.startswith("2"):
            owner.messages.append({"from": sender, "rcpts": list(accepted), "data": data, "time": time.time()})
        if owner.pad_replies and rep.startswith("2"):
            self.reply_lines(rep[:3], [rep[4:]], owner.pad_replies)
        else:
            self.reply(rep)
        return True


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class ScriptedSmtp:
    def __init__(self, host, port=2526, pipelining=True, chunking=False, tls=None, pad_replies=0,
                 my_name="scripted.peer.test"):
        self.host, self.port = host, port
        self.tls_ctx = None
        if tls:
            import ssl
            self.tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_ctx.load_cert_chain(*tls)
        self.pad_replies, self.my_name = pad_replies, my_name
        self.pipelining, self.chunking = pipelining, chunking
        self.mail_reject = "550 5.7.1 <bad-mail>: Sender address rejected: Access denied"
        self.auth_mechs, self.account, self.logins = "", None, []    # AUTH: offered mechanisms, (user, pw)
        self.messages, self.log, self.helos, self.peers = [], [], [], []
        self.sessions = self.quits = self.dropped = 0
        self.active = self.max_active = 0          # sessions open now / at most at once
        self.rcpt_delay = 0                        # seconds before each RCPT reply
        self.data_delay = 0                        # seconds after 354 before the data is read
        self.in_rcpt = self.max_in_rcpt = 0        # sessions waiting for a RCPT reply now / at most
        self.lock = threading.Lock()
        self.server = _Server((host, port), _Session)
        self.server.owner = self
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        on_cleanup(self.stop)
        wait_for(lambda: port_open(host, port), 5, "scripted SMTP on %s:%d" % (host, port))

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def client_commands(self):
        return [t for who, t in self.log if who == "C"]
