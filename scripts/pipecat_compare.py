#!/usr/bin/env python3
"""The front half's CPU, Caly against Pipecat, on the same Exotel recording, in one run.

Pipecat 1.14: ExotelFrameSerializer (JSON, base64, its SOXR stream resampler 8 → 16 kHz) →
SOXRStreamAudioResampler 16 → 24 kHz (what a Realtime model takes) → SileroVADAnalyzer at
16 kHz, over every media message of the capture, REPEAT times, in this process; its CPU time
is the loop's alone (the model's load is not counted).
Caly: `caly replay --pipeline pipelines/front_half.toml` over the same capture with its media
REPEAT times, in its own process; its CPU time is the whole process's (start-up counted). One
such process runs for about half a second, where Pipecat's loop runs for fifteen, so a moment
of the shared machine's noise weighs thirty times more on it: each run takes the mean of
CALY_RUNS (default 5) processes.

Usage (scripts/pipecat_compare.sh installs Pipecat and runs this):
    [CHUNK_MS=20] pipecat_compare.py CALY_BIN CAPTURE [REPEAT] [RUNS]
CHUNK_MS re-cuts the capture's audio into messages of that many milliseconds for both sides
(the capture's own are ~100 ms).
"""
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def media_lines(capture: str) -> tuple[list[str], list[str], list[str]]:
    head, media, tail = [], [], []
    with open(capture, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line).get("event")
            except json.JSONDecodeError:
                continue  # the capture's deliberately broken lines: neither side gets them
            if event == "media":
                if good_audio(line):
                    media.append(line)
            elif media:
                tail.append(line)
            else:
                head.append(line)
    return head, media, tail


def good_audio(line: str) -> bool:
    """A media message with valid base64 of whole samples (the capture's bad ones are left out)."""
    import base64
    import binascii

    try:
        payload = base64.b64decode(json.loads(line)["media"]["payload"], validate=True)
    except (binascii.Error, KeyError, TypeError, ValueError):
        return False
    return len(payload) > 0 and len(payload) % 2 == 0


def audio_seconds(media: list[str]) -> float:
    import base64

    samples = sum(len(base64.b64decode(json.loads(m)["media"]["payload"])) // 2 for m in media)
    return samples / 8000


async def pipecat_cpu(media: list[str], repeat: int) -> float:
    from pipecat.audio.resamplers.soxr_stream_resampler import SOXRStreamAudioResampler
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.frames.frames import StartFrame
    from pipecat.serializers.exotel import ExotelFrameSerializer

    serializer = ExotelFrameSerializer(stream_sid="MZfixture0001", call_sid="CAfixture0001")
    await serializer.setup(StartFrame(audio_in_sample_rate=16000, audio_out_sample_rate=24000))
    to_model = SOXRStreamAudioResampler()
    vad = SileroVADAnalyzer(sample_rate=16000)
    vad.set_sample_rate(16000)
    start = time.process_time()
    for _ in range(repeat):
        for message in media:
            frame = await serializer.deserialize(message)
            if frame is None:
                continue
            await to_model.resample(frame.audio, 16000, 24000)
            await vad.analyze_audio(frame.audio)
    return time.process_time() - start


def caly_cpu(caly: str, head: list[str], media: list[str], tail: list[str], repeat: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for line in head:
            f.write(line + "\n")
        seq = 1
        for _ in range(repeat):
            for line in media:
                seq += 1
                message = json.loads(line)
                message["sequence_number"] = str(seq)
                f.write(json.dumps(message) + "\n")
        for line in tail:
            f.write(line + "\n")
        path = f.name
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([caly, "replay", "--pipeline", "pipelines/front_half.toml", path],
                       check=True, stdout=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        os.unlink(path)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def rechunk(media: list[str], chunk_ms: int) -> list[str]:
    """The same audio in messages of `chunk_ms` (8 kHz PCM16: 16 bytes a millisecond)."""
    import base64

    pcm = b"".join(base64.b64decode(json.loads(m)["media"]["payload"]) for m in media)
    step = chunk_ms * 16
    out = []
    for i in range(0, len(pcm) - step + 1, step):
        out.append(json.dumps({"event": "media", "sequence_number": "0", "stream_sid": "MZfixture0001",
                               "media": {"chunk": str(len(out) + 1), "timestamp": str(len(out) * chunk_ms),
                                         "payload": base64.b64encode(pcm[i:i + step]).decode()}}))
    return out


def main() -> None:
    caly, capture = sys.argv[1], sys.argv[2]
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    chunk_ms = int(os.environ.get("CHUNK_MS", "0"))
    head, media, tail = media_lines(capture)
    if chunk_ms:
        media = rechunk(media, chunk_ms)
    seconds = audio_seconds(media) * repeat
    print(f"audio: {seconds / repeat:.2f} s × {repeat} = {seconds:.0f} s, {len(media)} media messages a pass")
    ratios = []
    for run in range(1, runs + 1):
        p = asyncio.run(pipecat_cpu(media, repeat))
        caly_runs = max(1, int(os.environ.get("CALY_RUNS", "5")))
        c = sum(caly_cpu(caly, head, media, tail, repeat) for _ in range(caly_runs)) / caly_runs
        ratios.append(p / c)
        print(f"run {run}: Pipecat {p / seconds * 1e6:,.0f} µs CPU per audio-second, "
              f"Caly {c / seconds * 1e6:,.0f} µs (start-up included, mean of {caly_runs} processes): "
              f"{p / c:.1f}× less")
    print(f"Caly uses {min(ratios):.1f}–{max(ratios):.1f}× less CPU per audio-second than Pipecat")


if __name__ == "__main__":
    main()
