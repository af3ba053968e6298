"""A kernel manager and client that never leave a grading core idle waiting for jupyter_client.

With one single-threaded worker per core, every second a worker spends waiting is a second of
that core lost. Three waits of jupyter_client's are cut here; nothing else changes.
"""

from __future__ import annotations

import time
from queue import Empty

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import Type

POLL_SLICE = 0.5  # seconds


class SlicedPollChannel(AsyncZMQSocketChannel):
    """A channel whose long waits are a series of short polls.

    pyzmq's asyncio poll sometimes misses a message that arrives while the client reads its other
    socket (cells that show ipywidgets make it likely: jupyter/nbclient#312). The wait then runs to
    its timeout, 600 s for a cell, and only then reads the message, with no error. A fresh poll
    sees a waiting message at once, so polls of at most POLL_SLICE bound the cost of a miss.
    """

    async def get_msg(self, timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SLICE if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await super().get_msg(timeout=min(POLL_SLICE, left))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise


class PromptKernelClient(AsyncKernelClient):
    """jupyter_client's kernel client, ready as soon as the kernel has answered on both channels.

    The stock `wait_for_ready` then listens for 0.2 s of silence on IOPub to drop stale messages;
    nbclient ignores messages that answer another request anyway, and 0.2 s is 3% of a submission.
    """

    shell_channel_class = Type(SlicedPollChannel)
    iopub_channel_class = Type(SlicedPollChannel)

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        while True:
            self.kernel_info()
            try:
                reply = await self.shell_channel.get_msg(timeout=1)
            except Empty:
                reply = None
            if reply is not None and reply["msg_type"] == "kernel_info_reply":
                try:  # a message on IOPub too: the subscription is live, so no output of the first cell is lost
                    await self.iopub_channel.get_msg(timeout=0.2)
                    self._handle_kernel_info_reply(reply)
                    return
                except Empty:
                    pass
            if not await self._async_is_alive():
                raise RuntimeError("the kernel died before it answered")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the kernel did not answer in {timeout} s")


class PromptKernelManager(AsyncKernelManager):
    """AsyncKernelManager with PromptKernelClient, polling a killed kernel's exit every 10 ms (not 100)."""

    client_factory = Type(PromptKernelClient, klass=AsyncKernelClient)

    async def _async_wait(self, pollinterval: float = 0.01) -> None:
        await super()._async_wait(pollinterval=min(pollinterval, 0.01))
