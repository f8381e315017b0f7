"""One input per actuator, chosen and bounded by the kit's descriptor.

integer/float -> slider (min, max, step), boolean -> toggle, enum -> dropdown, string -> text
field (max_length) with a Send button, json -> text area with a Send button. A control calls
`submit(actuator, value)` when the user changes it; the kit's own value is shown beside it
and copied into the input whenever the user is not editing it and no command is pending.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from labs.i18n import Texts
from labs.widgets.markup import html, text
from labs.widgets.plots import format_value

Submit = Callable[[str, Any], None]
Refused = Callable[[str, str, str], None]  # (actuator, typed text, why)


class LocalError(ValueError):
    """The input cannot be sent as is (e.g. text that is not JSON); str() is for the user."""


class ActuatorControl:
    """The input for one actuator, its current value, and whether the user may use it."""

    def __init__(
        self, actuator: str, spec: dict[str, Any], texts: Texts, submit: Submit, refused: Refused
    ) -> None:
        self.actuator = actuator
        self.spec = spec
        self.texts = texts
        self._submit = submit
        self._refused = refused
        self._syncing = False  # True while the page (not the user) sets the input's value
        self.pending = False  # a command from this control waits for its acknowledgement
        self.kit_value: Any = None
        self.datatype = spec["datatype"]
        self.input, self.send = self._make_input()
        self.current = W.HTML()
        self.current.add_class("smartlab-current")
        # Names come from the kit's $description and values from the kit: text, never markup.
        self.name = W.HTML(layout=W.Layout(width="160px"))
        self._options: tuple[tuple[str, str], ...] = ()
        parts = (
            [self.name, self.input]
            + ([self.send] if self.send is not None else [])
            + [self.current]
        )
        # wraps on a phone: the input goes under the name rather than past the screen's edge
        self.widget = W.HBox(parts, layout=W.Layout(align_items="center", flex_flow="row wrap"))
        self.widget.add_class("smartlab-control")
        self.widget.add_class(f"smartlab-control-{actuator}")
        texts.bind(self._relabel)
        self.set_enabled(False)

    # ------------------------------------------------------------ building

    def _make_input(self) -> tuple[W.DOMWidget, W.Button | None]:
        spec, kind = self.spec, self.datatype
        layout = W.Layout(width="280px", max_width="100%")
        if kind == "integer":
            widget = W.IntSlider(
                min=int(spec["min"]),
                max=int(spec["max"]),
                step=int(spec.get("step") or 1),
                value=int(spec["min"]),
                continuous_update=False,
                layout=layout,
            )
        elif kind == "float":
            low, high = float(spec["min"]), float(spec["max"])
            widget = W.FloatSlider(
                min=low,
                max=high,
                value=low,
                step=float(spec.get("step") or (high - low) / 100 or 0.1),
                continuous_update=False,
                layout=layout,
            )
        elif kind == "boolean":
            widget = W.ToggleButton(value=False, layout=W.Layout(width="120px"))
        elif kind == "enum":
            widget = W.Dropdown(options=list(spec["values"]), layout=layout)
        elif kind == "string":
            widget = W.Text(
                layout=layout, continuous_update=True, placeholder=f"≤ {spec.get('max_length', '')}"
            )
        else:  # json
            widget = W.Textarea(rows=4, layout=W.Layout(width="420px", max_width="100%"))
        widget.add_class("smartlab-input")
        send = None
        if kind in ("string", "json"):
            send = W.Button(layout=W.Layout(width="auto"))
            send.add_class("smartlab-send")
            send.on_click(lambda _b: self._send_text())
        else:
            widget.observe(self._changed, names="value")
        if kind == "boolean":
            widget.observe(lambda _c: self._relabel(), names="value")
        return widget, send

    def _relabel(self) -> None:
        name = self.texts.name(self.spec, self.actuator)
        self.name.value = html("<b>{}</b>", name)
        if self.datatype != "boolean":
            # The input's accessible name (a <label> for it, visually hidden by the smartlab
            # Voilà template since the name is shown beside it); a toggle says on/off instead.
            self.input.description = name
        if self.datatype == "enum":
            self._label_options()
        if self.send is not None:
            self.send.description = self.texts("send")
        if self.datatype == "boolean":
            self.input.description = self.texts("true" if self.input.value else "false")
        # Without one the browser shows the tooltip "null" (a described ipywidget's title).
        self.input.tooltip = name
        self.current.value = text(
            self.texts("now", value=format_value(self.kit_value, self.spec, self.texts))
        )

    def _label_options(self) -> None:
        """An enum's choices by their names in the page's language (the values stay codes).
        Setting options selects the first one, so the shown value is put back unsent."""
        options = tuple((self.texts.value(self.spec, v), v) for v in self.spec["values"])
        if options == self._options:
            return
        value, self._options = self.input.value, options
        self._syncing = True
        try:
            self.input.options = options
            if value is not None:
                self.input.value = value
        finally:
            self._syncing = False

    # ------------------------------------------------------------ user actions

    def _changed(self, change: dict[str, Any]) -> None:
        if self._syncing or self.input.disabled:
            return
        self.pending = True
        self._submit(self.actuator, change["new"])

    def _send_text(self) -> None:
        if self.input.disabled:
            return
        try:
            value = self.parse(self.input.value)
        except LocalError as err:
            self._refused(self.actuator, self.input.value, str(err))
            return
        self.pending = True
        self._submit(self.actuator, value)

    def parse(self, text: str) -> Any:
        """The value of a text input: JSON for json actuators (LocalError if it is not)."""
        if self.datatype != "json":
            return text
        try:
            return json.loads(text)
        except ValueError as err:
            raise LocalError(self.texts("reason_bad_json", detail=str(err))) from None

    # ------------------------------------------------------------ page actions

    def set_enabled(self, enabled: bool) -> None:
        self.input.disabled = not enabled
        if self.send is not None:
            self.send.disabled = not enabled

    def show_kit_value(self, value: Any) -> None:
        """The kit's current value: shown beside the input and copied into it unless the user
        is editing (text) or a command of this control is pending."""
        if value != self.kit_value:
            self.kit_value = value
            self._relabel()
        if value is None or self.pending:
            return
        if self.datatype in ("string", "json"):
            # Text the user has typed stays until sent; a disabled field follows the kit.
            if not self.input.disabled:
                return
            value = value if self.datatype == "string" else json.dumps(value)
        self._set_input(value)

    def settled(self, applied: Any = None) -> None:
        """The pending command got its answer (`applied`: the value the kit now has): show
        the kit's value again."""
        self.pending = False
        if applied is not None and applied != self.kit_value:
            self.kit_value = applied
            self._relabel()
        if self.kit_value is not None and self.datatype not in ("string", "json"):
            self._set_input(self.kit_value)

    def _set_input(self, value: Any) -> None:
        if self.input.value == value:
            return
        self._syncing = True
        try:
            self.input.value = value
        except Exception:  # a value the input cannot hold (a kit outside its own bounds)
            pass
        finally:
            self._syncing = False
