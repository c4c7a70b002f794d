"""HL7 test helpers: a real MLLP listener (python-hl7's own asyncio server on loopback, in a thread),
and readers of the ORU's fields and of the SR's numbers to compare them with.

It parses every message with python-hl7 and answers as told: ``ack = "AA"`` (default),
``"AE"``, ``"AR"`` (with a reason in MSA-3), or ``None`` (reads the message and never answers,
as a stuck interface engine does).
"""

from __future__ import annotations

import asyncio
import threading

import hl7
import hl7.mllp

from tests.integration.servers import HOST, free_port


class MllpListener:
    """Start with :meth:`start` (or as a context manager); ``messages`` holds every parsed message."""

    def __init__(self, port: int | None = None, ack: str | None = "AA"):
        self.port = port or free_port()
        self.ack = ack
        self.messages: list[hl7.Message] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    async def _handle(self, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while not reader.at_eof():
                message = await reader.readmessage()  # parsed by python-hl7
                self.messages.append(message)
                if self.ack is None:
                    await asyncio.sleep(3600)
                ack = str(message.create_ack(self.ack, message_id=f"ACK{len(self.messages)}"))
                if self.ack != "AA":
                    ack = ack.rstrip("\r") + f"|refused by the test listener ({self.ack})\r"
                writer.writemessage(hl7.parse(ack))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await hl7.mllp.start_hl7_server(self._handle, HOST, self.port, encoding="utf-8",
                                                              limit=64 * 1024 * 1024)  # a PDF as ED is MBs
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    def start(self) -> "MllpListener":
        self._thread = threading.Thread(target=self._run, name="mllp-listener", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the MLLP listener did not start"
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> "MllpListener":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def part(segment, field: int, component: int | None = None) -> str:
    """Field ``field`` of a python-hl7 segment as sent (escaped), or its ``component`` (1-based)."""
    text = str(segment[field]) if len(segment) > field else ""
    return text.split("^")[component - 1] if component else text


def sr_numbers(sr) -> list[tuple[str, str]]:
    """(concept code, Numeric Value as written) of every measurement of every measurement group
    (TID 1500: Imaging Measurements 126010 > groups 125007 > NUM), read with pydicom alone."""
    def code(item) -> str:
        return item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else ""

    numbers = []
    for container in sr.ContentSequence:
        if code(container) != "126010":
            continue
        for group in container.ContentSequence:
            numbers += [(code(item), str(item.MeasuredValueSequence[0].NumericValue))
                        for item in group.get("ContentSequence", []) if item.ValueType == "NUM"]
    return sorted(numbers)


def obx_numbers(message: hl7.Message) -> list[tuple[str, str]]:
    return sorted((part(obx, 3, 1), part(obx, 5)) for obx in message.segments("OBX") if part(obx, 2) == "NM")
