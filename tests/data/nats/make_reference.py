"""Writes the reference payloads in this directory with Duct 2.2.1's own
encoders (duct.protocol.senml). Run with the Python that has ducted 2.2.1:

    /tmp/ducted-venv/bin/python tests/data/nats/make_reference.py tests/data/nats
"""
import sys

from duct.objects import Event
from duct.protocol import senml

EVENTS = {
    # Every field set; a non-ASCII description and a float metric.
    "full": Event("ok", "cpu", "CPU 12% \u00e9t\u00e9 \"quoted\"", 0.12, 60.0,
                  tags=["a", "b"], hostname="web1.example",
                  evtime=1732500000.25, attributes={"dc": "west", "rack": "r1"}),
    # An integer metric, no state or description, a TTL with decimals.
    "int": Event("", "load.count", "", 5, 30.5, hostname="db1",
                 evtime=1700000000.0),
    # No metric; a float that Python writes in exponent form.
    "none": Event("critical", "ping", "unreachable", None, 120.0,
                  tags=["net"], hostname="h", evtime=1.5e-07),
    "tiny": Event("ok", "rate", "", 1.5e-07, 60.0, hostname="h",
                  evtime=12345678901234567.0),
}

FORMATS = {
    "json": senml.event_to_json,
    "senml-json": senml.event_to_senml,
    "senml-cbor": senml.event_to_senml_cbor,
    "senml-cbor-extended": senml.event_to_senml_cbor_extended,
}

for name, event in EVENTS.items():
    for fmt, encode in FORMATS.items():
        with open(f"{sys.argv[1]}/{name}.{fmt}", "wb") as f:
            f.write(encode(event))
