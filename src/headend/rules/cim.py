"""Alerts as IEC 61968-9 ``EndDeviceEvents`` inside an IEC 61968-100 message envelope.

::

    <msg:EventMessage xmlns:msg="http://iec.ch/TC57/2011/schema/message">
      <msg:Header>
        <msg:Verb>created</msg:Verb> <msg:Noun>EndDeviceEvents</msg:Noun>
        <msg:Timestamp/> <msg:Source/> <msg:MessageID/>
      </msg:Header>
      <msg:Payload>
        <m:EndDeviceEvents xmlns:m="http://iec.ch/TC57/2011/EndDeviceEvents#">
          <m:EndDeviceEvent> mRID, createdDateTime, reason, severity, Assets/mRID,
             EndDeviceEventDetails (name, value)*, EndDeviceEventType/@ref, status </m:EndDeviceEvent>
        </m:EndDeviceEvents>
      </msg:Payload>
    </msg:EventMessage>

No official XSD is available here, so :data:`XSD` is our own schema of the envelope and
of the EndDeviceEvents subset we emit (element names and order as in IEC 61968-9:2013
EndDeviceEvents and IEC 61968-100:2013 Message.xsd); :func:`validate` checks a document
against it with lxml (libxml2), a validator we did not write.

Event types: outage -> 3.26.0.85 (power failure), restoration -> 3.26.0.216, alarms
-> the event type of the rule (``ALARM_EVENT_TYPE``) or ``0.0.0.0`` (not applicable)
when IEC 61968-9 has none we know of (silent meter, overload, zero consumption).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from headend.errors import ConfigError, ValidationError
from headend.model import codes
from headend.rules.alerts import Alert, iso, record_id

__all__ = ["EDE_NS", "MSG_NS", "XSD", "render_json", "render_xml", "validate"]

MSG_NS: Final = "http://iec.ch/TC57/2011/schema/message"
EDE_NS: Final = "http://iec.ch/TC57/2011/EndDeviceEvents#"

_ev = {e.name: e.code for e in codes.EVENT_TYPES}
#: rule kind (or rule name) -> EndDeviceEventType of its alarms
ALARM_EVENT_TYPE: Final = {
    "tamper": _ev["cover_removed"], "reverse_energy": _ev["reverse_energy"],
    "water_leak": _ev["water_leak"], "gas_flow": _ev["gas_abnormal_flow"],
    "voltage": _ev["under_voltage"], "outage": _ev["power_fail"],
}
_SEVERITY: Final = {"outage": "critical", "restoration": "info", "alarm": "major",
                     "alarm_cleared": "info", "storm": "critical"}


def _event_type(a: Alert) -> str:
    if a.kind == "outage":
        return _ev["power_fail"]
    if a.kind == "restoration":
        return _ev["power_restored"]
    inputs = a.record.get("inputs") or []
    ev = [i.split(":", 1)[1] for i in inputs if i.startswith("events:")]
    if len(ev) == 1:
        return str(ev[0])
    detail = str(a.record.get("detail", ""))
    if detail.startswith(("voltage above", "transformer voltage above")):
        return _ev["over_voltage"]
    if detail.startswith(("voltage below", "transformer voltage below")):
        return _ev["under_voltage"]
    for key, code in ALARM_EVENT_TYPE.items():
        if a.rule.startswith(key):
            return code
    return "0.0.0.0"


def _etree() -> Any:
    try:
        from lxml import etree
    except ImportError as exc:  # pragma: no cover - lxml ships with the test extra
        raise ConfigError("IEC 61968 XML needs lxml: pip install 'headend[test]' "
                          "(or lxml)") from exc
    return etree


def render_xml(alerts: Sequence[Alert], *, source: str = "headend",
               now: datetime | None = None) -> bytes:
    """One ``EventMessage`` (Verb created, Noun EndDeviceEvents) holding every alert."""
    etree = _etree()
    now = now or datetime.now(UTC)
    E = etree.Element
    msg = E(f"{{{MSG_NS}}}EventMessage", nsmap={"msg": MSG_NS})
    hdr = etree.SubElement(msg, f"{{{MSG_NS}}}Header")
    ts = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    mid = record_id("msg", ts, *(a.id for a in alerts))
    for tag, text in (("Verb", "created"), ("Noun", "EndDeviceEvents"), ("Timestamp", ts),
                      ("Source", source), ("MessageID", mid)):
        etree.SubElement(hdr, f"{{{MSG_NS}}}{tag}").text = text
    pay = etree.SubElement(msg, f"{{{MSG_NS}}}Payload")
    evs = etree.SubElement(pay, f"{{{EDE_NS}}}EndDeviceEvents", nsmap={"m": EDE_NS})
    for a in alerts:
        ev = etree.SubElement(evs, f"{{{EDE_NS}}}EndDeviceEvent")

        def sub(parent: Any, tag: str, text: str | None = None) -> Any:
            el = etree.SubElement(parent, f"{{{EDE_NS}}}{tag}")
            if text is not None:
                el.text = text
            return el

        sub(ev, "mRID", f"{a.id}-{a.kind}")
        sub(ev, "createdDateTime", iso(a.time))
        sub(ev, "reason", f"{a.kind}: {a.record.get('detail', a.level)}"[:256])
        sub(ev, "severity", _SEVERITY[a.kind])
        sub(sub(ev, "Assets"), "mRID", a.device_id)
        details = {"rule": a.rule, "level": a.level, "kind": a.kind}
        for k in ("start", "end", "sustained", "meters_affected", "outage_id", "alarm_id"):
            if k in a.record:
                v = a.record[k]
                details[k] = "" if v is None else (json.dumps(v) if isinstance(v, bool) else str(v))
        for k, v in details.items():
            d = sub(ev, "EndDeviceEventDetails")
            sub(d, "name", k)
            sub(d, "value", v)
        sub(ev, "EndDeviceEventType").set("ref", _event_type(a))
        st = sub(ev, "status")
        sub(st, "dateTime", iso(a.time))
        sub(st, "value", "open" if a.kind in ("outage", "alarm", "storm") else "closed")
    return bytes(etree.tostring(msg, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def render_json(alerts: Sequence[Alert]) -> str:
    """JSON lines, one alert per line (``Alert.to_json``)."""
    return "".join(json.dumps(a.to_json(), sort_keys=True) + "\n" for a in alerts)


XSD: Final = f"""<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"
           xmlns:msg="{MSG_NS}" xmlns:m="{EDE_NS}"
           targetNamespace="{MSG_NS}" elementFormDefault="qualified">
  <xs:import namespace="{EDE_NS}" schemaLocation="EndDeviceEvents.xsd"/>
  <xs:simpleType name="Verb">
    <xs:restriction base="xs:string">
      <xs:enumeration value="created"/><xs:enumeration value="changed"/>
      <xs:enumeration value="canceled"/><xs:enumeration value="closed"/>
      <xs:enumeration value="deleted"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:element name="EventMessage">
    <xs:complexType><xs:sequence>
      <xs:element name="Header">
        <xs:complexType><xs:sequence>
          <xs:element name="Verb" type="msg:Verb"/>
          <xs:element name="Noun" type="xs:string"/>
          <xs:element name="Timestamp" type="xs:dateTime"/>
          <xs:element name="Source" type="xs:string"/>
          <xs:element name="MessageID" type="xs:string"/>
        </xs:sequence></xs:complexType>
      </xs:element>
      <xs:element name="Payload">
        <xs:complexType><xs:sequence>
          <xs:element ref="m:EndDeviceEvents"/>
        </xs:sequence></xs:complexType>
      </xs:element>
    </xs:sequence></xs:complexType>
  </xs:element>
</xs:schema>
"""

XSD_EDE: Final = f"""<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:m="{EDE_NS}"
           targetNamespace="{EDE_NS}" elementFormDefault="qualified">
  <xs:simpleType name="EventTypeCode">
    <xs:restriction base="xs:string">
      <xs:pattern value="[0-9]{{1,2}}\\.[0-9]{{1,3}}\\.[0-9]{{1,4}}\\.[0-9]{{1,4}}"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:element name="EndDeviceEvents">
    <xs:complexType><xs:sequence>
      <xs:element name="EndDeviceEvent" minOccurs="0" maxOccurs="unbounded">
        <xs:complexType><xs:sequence>
          <xs:element name="mRID" type="xs:string"/>
          <xs:element name="createdDateTime" type="xs:dateTime"/>
          <xs:element name="reason" type="xs:string" minOccurs="0"/>
          <xs:element name="severity" type="xs:string" minOccurs="0"/>
          <xs:element name="Assets"><xs:complexType><xs:sequence>
            <xs:element name="mRID" type="xs:string"/>
          </xs:sequence></xs:complexType></xs:element>
          <xs:element name="EndDeviceEventDetails" minOccurs="0" maxOccurs="unbounded">
            <xs:complexType><xs:sequence>
              <xs:element name="name" type="xs:string"/>
              <xs:element name="value" type="xs:string"/>
            </xs:sequence></xs:complexType>
          </xs:element>
          <xs:element name="EndDeviceEventType"><xs:complexType>
            <xs:attribute name="ref" type="m:EventTypeCode" use="required"/>
          </xs:complexType></xs:element>
          <xs:element name="status" minOccurs="0"><xs:complexType><xs:sequence>
            <xs:element name="dateTime" type="xs:dateTime"/>
            <xs:element name="value" type="xs:string"/>
          </xs:sequence></xs:complexType></xs:element>
        </xs:sequence></xs:complexType>
      </xs:element>
    </xs:sequence></xs:complexType>
  </xs:element>
</xs:schema>
"""


def _schema() -> Any:
    etree = _etree()

    class _Resolver(etree.Resolver):  # type: ignore[misc,name-defined]
        def resolve(self, url: str | None, pubid: str | None, context: object) -> object:
            if url and url.endswith("EndDeviceEvents.xsd"):
                return self.resolve_string(XSD_EDE.encode(), context)
            return None

    parser = etree.XMLParser()
    parser.resolvers.add(_Resolver())
    return etree.XMLSchema(etree.fromstring(XSD.encode(), parser))


def validate(xml: bytes) -> None:
    """Validate a message against :data:`XSD` with lxml; raises :class:`ValidationError`."""
    schema = _schema()
    doc = _etree().fromstring(xml)
    if not schema.validate(doc):
        raise ValidationError(f"EndDeviceEvents message invalid: {schema.error_log.last_error}")
