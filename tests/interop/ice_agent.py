"""One ICE agent of the NAT lab (aioice, an implementation nobody here wrote).

usage: ice_agent.py controlling|controlled SIGNAL_DIR SERVER_HOST SERVER_PORT USER PASSWORD COUNT

Gathers host, server-reflexive (STUN) and relayed (TURN over UDP) candidates from xturn at
SERVER_HOST:SERVER_PORT, writes them with its ufrag/pwd to SIGNAL_DIR/ROLE.json (the
signalling: a file, written whole then renamed) and reads the other agent's, runs the ICE
checks, then sends data over the nominated pair: the controlling agent sends COUNT
datagrams, the controlled one echoes them, and the controlling one checks every echo
byte for byte. Prints one JSON line: the nominated pair's local and remote candidate
types and what was sent and received. Exits 1 when ICE fails or data is lost.

aioice nominates aggressively: the first pair whose check succeeds wins. A relay pair can
then win a race against a hole that is being punched (a cone's first check is dropped
until the other side's own check opens the mapping, and is retried 500 ms later). So that
the lab shows what the NATs allow rather than that race, checks of pairs with a relayed
candidate start RELAY_DELAY (3 s) late, as an agent with regular nomination would prefer a
direct pair that works. Every wait is bounded.
"""

import asyncio
import json
import os
import sys
import time

import aioice
from aioice.ice import CandidatePair

RELAY_DELAY = 3.0


class LabConnection(aioice.Connection):
    async def check_start(self, pair):
        if "relay" in (pair.local_candidate.type, pair.remote_candidate.type):
            self.check_state(pair, CandidatePair.State.IN_PROGRESS)
            await asyncio.sleep(RELAY_DELAY)
        await super().check_start(pair)


async def read_signal(path, deadline):
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no signal at {path}")


async def main(role, signal_dir, host, port, user, password, count):
    controlling = role == "controlling"
    conn = LabConnection(
        ice_controlling=controlling,
        components=1,
        stun_server=(host, port),
        turn_server=(host, port),
        turn_username=user,
        turn_password=password,
        turn_transport="udp",
        use_ipv6=False,
    )
    deadline = time.monotonic() + 60
    await asyncio.wait_for(conn.gather_candidates(), timeout=20)
    mine = {
        "ufrag": conn.local_username,
        "pwd": conn.local_password,
        "candidates": [c.to_sdp() for c in conn.local_candidates],
    }
    tmp = os.path.join(signal_dir, f".{role}.json")
    with open(tmp, "w") as f:
        json.dump(mine, f)
    os.rename(tmp, os.path.join(signal_dir, f"{role}.json"))
    other = "controlled" if controlling else "controlling"
    theirs = await read_signal(os.path.join(signal_dir, f"{other}.json"), deadline)
    conn.remote_username = theirs["ufrag"]
    conn.remote_password = theirs["pwd"]
    for sdp in theirs["candidates"]:
        await conn.add_remote_candidate(aioice.Candidate.from_sdp(sdp))
    await conn.add_remote_candidate(None)
    result = {
        "role": role,
        "local_candidates": sorted({c.type for c in conn.local_candidates}),
    }
    try:
        await asyncio.wait_for(conn.connect(), timeout=30)
    except Exception as e:  # ICE failed or timed out
        result["error"] = f"ice: {e!r}"
        print(json.dumps(result), flush=True)
        await conn.close()
        return 1
    pair = conn._nominated[1]
    result["local"] = pair.local_candidate.type
    result["remote"] = pair.remote_candidate.type
    result["remote_addr"] = list(pair.remote_addr)
    status = 0
    if controlling:
        got = 0
        for i in range(count):
            payload = i.to_bytes(4, "big") + bytes((i * 13 + k) % 256 for k in range(i % 200))
            await conn.send(payload)
            try:
                data = await asyncio.wait_for(conn.recv(), timeout=5)
            except asyncio.TimeoutError:
                break
            if data != payload:
                result["error"] = f"mismatch at {i}"
                break
            got += 1
        result["sent"] = count
        result["received"] = got
        if got != count:
            status = 1
        # Tell the other side it can stop.
        await conn.send(b"done")
    else:
        echoed = 0
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(conn.recv(), timeout=10)
            except asyncio.TimeoutError:
                break
            if data == b"done":
                break
            await conn.send(data)
            echoed += 1
        result["echoed"] = echoed
    print(json.dumps(result), flush=True)
    await conn.close()
    return status


if __name__ == "__main__":
    role, signal_dir, host, port, user, password, count = sys.argv[1:8]
    sys.exit(
        asyncio.run(main(role, signal_dir, host, int(port), user, password, int(count)))
    )
