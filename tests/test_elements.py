"""Element symbols and numbers, and the message for elements a model does not support."""

from __future__ import annotations

import pytest

from forcefield_et.elements import number, symbol, unsupported_elements


def test_symbols_and_numbers_round_trip():
    assert [symbol(z) for z in (1, 6, 8, 17, 118)] == ["H", "C", "O", "Cl", "Og"]
    assert all(number(symbol(z)) == z for z in range(1, 119))


@pytest.mark.parametrize("z", [0, -1, 119, 1000])
def test_numbers_outside_the_table_are_named_by_number(z):
    assert symbol(z) == f"Z={z}"


def test_unknown_symbols_are_refused():
    with pytest.raises(ValueError, match="unknown chemical symbol 'Xx'"):
        number("Xx")


def test_unsupported_elements_message_names_each_element_once_and_what_is_supported():
    assert unsupported_elements([1, 6, 6, 8], [1, 6, 7, 8], "frames.xyz", "pretrained") is None
    message = unsupported_elements([1, 26, 6, 26, 79], [1, 6, 8], "frames.xyz", "the model 'pretrained'")
    assert message == ("frames.xyz: element(s) Fe (Z=26), Au (Z=79) not supported by the model 'pretrained'; "
                       "supported: H C O")
