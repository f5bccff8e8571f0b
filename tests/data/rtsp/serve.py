"""A one-mount RTSP server for tests/sensors.rs: GStreamer's RTSP server
(Debian gir1.2-gst-rtsp-server-1.0, python3-gi, gstreamer1.0-plugins-base
and -good) serving a live VP8 test pattern, 160x120 at 5 fps.

ffmpeg 5.1 cannot serve RTSP (`-rtsp_flags listen` is an input option: it
waits for a client to push a stream to it), so a real server is this one.

usage: serve.py PORT PATH   (e.g. 8554 /sample_100kbit.mp4)
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
port, path = sys.argv[1], sys.argv[2]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    "( videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=5/1"
    " ! vp8enc deadline=1 ! rtpvp8pay name=pay0 pt=96 )"
)
factory.set_shared(True)
server.get_mount_points().add_factory(path, factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{port}")
GLib.MainLoop().run()
