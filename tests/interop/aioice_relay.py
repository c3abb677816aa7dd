"""Relay through xturn with aioice's TURN client (an implementation nobody here wrote).

usage: aioice_relay.py SERVER_PORT USER PASSWORD COUNT [SERVER_HOST [ECHO_HOST:ECHO_PORT]]

Allocates over UDP (or TCP with TURN_TRANSPORT=tcp in the environment, TLS with
TURN_TRANSPORT=tls and the CA file in TURN_CAFILE) on
SERVER_HOST:SERVER_PORT (default 127.0.0.1), sends COUNT datagrams
to a UDP peer through the relay, has the peer echo each one back through the relayed
address, and checks every payload byte for byte. The peer is an echo server of this
script on 127.0.0.1, or, with ECHO_HOST:ECHO_PORT, one that runs elsewhere (e.g. coturn's
turnutils_peer in another network namespace); then the check that the peer saw only the
relayed address is left to that peer's side. aioice binds a channel (RFC 8656 range)
after the first send, so both Send indications and ChannelData are exercised.
Prints one JSON line with the counts; exits 1 on any loss or mismatch.
"""

import asyncio
import json
import os
import sys

import aioice.turn


class Collect(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, addr))


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport
        self.sources = set()

    def datagram_received(self, data, addr):
        self.sources.add(addr)
        self.transport.sendto(data, addr)


async def main(port, user, password, count, host="127.0.0.1", echo=None):
    loop = asyncio.get_running_loop()
    transport = os.environ.get("TURN_TRANSPORT", "udp")
    tls = None
    if transport == "tls":
        import ssl

        tls = ssl.create_default_context(cafile=os.environ["TURN_CAFILE"])
        transport = "tcp"
    turn, client = await asyncio.wait_for(
        aioice.turn.create_turn_endpoint(
            Collect,
            (host, port),
            user,
            password,
            transport=transport,
            ssl=tls,
        ),
        timeout=10,
    )
    relayed = turn.get_extra_info("sockname")
    if echo is None:
        peer_transport, peer = await loop.create_datagram_endpoint(
            Echo, local_addr=("127.0.0.1", 0)
        )
        peer_addr = peer_transport.get_extra_info("sockname")
    else:
        peer_transport, peer = None, None
        peer_addr = echo
    received = 0
    try:
        for i in range(count):
            payload = i.to_bytes(4, "big") + bytes((i * 7 + k) % 256 for k in range(i % 300))
            turn.sendto(payload, peer_addr)
            data, addr = await asyncio.wait_for(client.queue.get(), timeout=5)
            if data != payload or tuple(addr[:2]) != tuple(peer_addr[:2]):
                print(json.dumps({"error": "mismatch", "index": i}))
                return 1
            received += 1
    except asyncio.TimeoutError:
        print(json.dumps({"error": "timeout", "received": received}))
        return 1
    finally:
        if peer_transport is not None:
            peer_transport.close()
        turn.close()
    if peer is None:
        print(json.dumps({"sent": count, "received": received, "relayed": list(relayed[:2])}))
        return 0
    saw = sorted([list(a[:2]) for a in peer.sources])
    print(json.dumps({"sent": count, "received": received, "relayed": list(relayed[:2]), "peer_saw": saw}))
    # The peer must have seen exactly one source: the relayed address.
    return 0 if saw == [list(relayed[:2])] else 1


if __name__ == "__main__":
    port, user, password, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    host = sys.argv[5] if len(sys.argv) > 5 else "127.0.0.1"
    echo = None
    if len(sys.argv) > 6:
        h, p = sys.argv[6].rsplit(":", 1)
        echo = (h, int(p))
    sys.exit(asyncio.run(main(port, user, password, count, host, echo)))
