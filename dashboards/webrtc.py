"""WebRTC signalling for the live view: an offer per viewer and station, answered by aiortc.

The browser offers a receive-only video transceiver and a data channel; the answer attaches the
station's shared-encoder track (VP8 only, since the packets are encoded once for everyone) and
sends the station's events as JSON on the data channel. ICE uses host candidates, which is enough
on loopback and a LAN; STUN/TURN servers for other networks come from settings.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from dashboards.auth import ViewerWrite
from dashboards.live_feed import StationFeed
from dashboards.live_video import PacketTrack, SharedEncoder
from pipeline.streams import Redis

logger = logging.getLogger(__name__)


class Offer(BaseModel):
    """A browser's session description (``RTCPeerConnection.localDescription`` as JSON)."""

    sdp: str = Field(min_length=1, max_length=100_000)
    type: Literal["offer"]


class Answer(BaseModel):
    sdp: str
    type: Literal["answer"]


class LiveView:
    """Feeds, shared encoders and peer connections of every station the dashboard shows."""

    def __init__(
        self,
        redis: Redis,
        station_ids: list[str],
        height: int = 720,
        fps: float = 15.0,
        ice_servers: list[str] | None = None,
    ) -> None:
        width = round(height * 16 / 9)
        self.encoders = {
            sid: SharedEncoder(StationFeed(redis, sid, height), width, height, fps) for sid in station_ids
        }
        self.ice = RTCConfiguration([RTCIceServer(url) for url in ice_servers or []])
        self.peers: set[RTCPeerConnection] = set()

    async def answer(self, station_id: str, offer: Offer) -> Answer:
        encoder = self.encoders.get(station_id)
        if encoder is None:
            raise HTTPException(404, f"no station {station_id!r}; stations: {', '.join(self.encoders)}")
        pc = RTCPeerConnection(self.ice)
        self.peers.add(pc)
        track = encoder.subscribe()
        self._wire(pc, encoder, track)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, offer.type))
            video = [t for t in pc.getTransceivers() if t.kind == "video"]
            if not video:
                raise ValueError("the offer has no video transceiver (addTransceiver('video'))")
            sender = pc.addTrack(track)
            transceiver = next(t for t in pc.getTransceivers() if t.sender == sender)
            vp8 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/VP8"]
            transceiver.setCodecPreferences(vp8)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as e:  # bad SDP: aiortc raises ValueError, and AssertionError on some lines
            # (a non-numeric port, a bare candidate); every failure closes the connection, or the
            # station's encoder would keep running for a viewer that never comes
            await self._close(pc, track)
            raise HTTPException(400, f"unusable WebRTC offer: {type(e).__name__}: {e}") from e
        local = pc.localDescription
        return Answer(sdp=local.sdp, type="answer")

    def _wire(self, pc: RTCPeerConnection, encoder: SharedEncoder, track: PacketTrack) -> None:
        feed = encoder.feed

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            def send(event: dict[str, Any]) -> None:
                if channel.readyState == "open":
                    channel.send(json.dumps(event))

            feed.listeners.add(send)
            channel.on("close", lambda: feed.listeners.discard(send))
            send(feed.state_event())

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._close(pc, track)

    async def _close(self, pc: RTCPeerConnection, track: PacketTrack) -> None:
        track.stop()
        self.peers.discard(pc)
        await pc.close()

    async def shutdown(self) -> None:
        await asyncio.gather(*(pc.close() for pc in list(self.peers)), return_exceptions=True)
        self.peers.clear()
        for encoder in self.encoders.values():
            await encoder.close()


def router(live: LiveView) -> APIRouter:
    api = APIRouter()

    @api.post("/api/stations/{station_id}/webrtc/offer", response_model=Answer)
    async def webrtc_offer(station_id: str, offer: Offer, _: ViewerWrite) -> Answer:
        """Answer a viewer's offer with the station's live overlay track and event channel."""
        return await live.answer(station_id, offer)

    return api
