import pytest

from rvq_viewer.app.code_ref import parse_code_ref

SIZES = [512, 512, 1024, 1024]


@pytest.mark.parametrize("text, want", [("256", (1, 256)), ("3:256", (3, 256)), (" 3 : 256 ", (3, 256)),
                                        ("L3:256", (3, 256)), ("layer 2 code 1000", (2, 1000)), ("0", (1, 0)),
                                        ("2/5", (2, 5))])
def test_a_code_or_layer_and_code(text, want):
    assert parse_code_ref(text, 1, SIZES) == want


@pytest.mark.parametrize("text, message", [("3:1024", "code 1024: layer 3 has codes 0-1,023"),
                                           ("4:1", "layer 4: this quantizer has layers 0-3"),
                                           ("512", "code 512: layer 1 has codes 0-511"),
                                           ("abc", "type a code"), ("", "type a code"), ("-3", "type a code")])
def test_what_is_wrong_is_said(text, message):
    with pytest.raises(ValueError, match=message):
        parse_code_ref(text, 1, SIZES)


def test_nothing_open():
    with pytest.raises(ValueError, match="no checkpoint open"):
        parse_code_ref("3", 0, [])
