"""The operator's API of POST /score: verdicts, the threshold-scaled map, multipart, top_group.

A real server on loopback with the fixture bundle (score = 100 * mean((x/255 - 0.5)^2)), so
every number below can be worked out by hand.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.request
import uuid

import numpy as np
import pytest
from edge_fixtures import http, make_bundle, png_bytes, running_server, tiling_block
from PIL import Image


def spot_frame() -> np.ndarray:
    img = np.full((32, 32), 128, np.uint8)
    img[:8, :8] = 255  # score = 100 * 64/1024 * (127.5/255)^2 ~ 1.56
    return img


def _multipart(data: bytes, field: str = "file") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nline 3\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"x.png\""
        "\r\nContent-Type: image/png\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": content_type})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    bundle = make_bundle(tmp_path_factory.mktemp("api") / "b", threshold=1.0)
    with running_server(bundle) as (url, srv):
        yield url, srv


def test_verdict_score_threshold_and_legacy_decision(server):
    url, _ = server
    status, body = http("POST", f"{url}/score", png_bytes(spot_frame()))
    assert status == 200
    assert body["verdict"] == "reject" and body["decision"] is True
    assert body["threshold"] == 1.0 and body["score"] == pytest.approx(1.5625, rel=1e-3)
    assert "top_group" not in body and "anomaly_map" not in body  # not significant; not asked


def test_multipart_upload_scores_like_the_raw_body(server):
    url, _ = server
    data = png_bytes(spot_frame())
    body, ctype = _multipart(data)
    status, answer = _post(f"{url}/score", body, ctype)
    assert status == 200
    assert answer["score"] == http("POST", f"{url}/score", data)[1]["score"]
    empty, ctype = _multipart(b"")
    req = urllib.request.Request(f"{url}/score", data=empty, method="POST",
                                 headers={"Content-Type": ctype})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400 and "no file part" in json.loads(err.value.read())["error"]


def test_map_array_is_on_the_threshold_scale(server):
    url, _ = server
    status, body = http("POST", f"{url}/score?map=array", png_bytes(spot_frame()))
    amap = body["anomaly_map"]
    assert status == 200 and amap["scale"] == "1.0 = threshold" and amap["shape"] == [32, 32]
    values = np.array(amap["values"])
    # whole-image bundle: the map's peak equals score / threshold, calm pixels are ~0
    assert values.max() == pytest.approx(body["score"] / body["threshold"], rel=1e-3)
    assert values[20:, 20:].max() < 1e-3


def test_map_png_encodes_the_fixed_scale(server):
    url, _ = server
    status, body = http("POST", f"{url}/score?map=png", png_bytes(spot_frame()))
    grey = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["anomaly_map"]["png_base64"]))))
    peak = body["score"] / body["threshold"]  # 1.56 thresholds -> grey 255 * 1.56 / 2
    assert grey[0, 0] == round(255 * peak / 2) and grey[30, 30] == 0
    assert http("POST", f"{url}/score?map=jpeg", png_bytes(spot_frame()))[0] == 400


def test_tiled_map_is_the_map_divided_by_the_threshold(tmp_path):
    bundle = make_bundle(tmp_path / "t", 32, 32, threshold=0.1, tiling=tiling_block(32, 32, 64))
    img = np.full((64, 64), 128, np.uint8)
    img[20:40, 20:40] = 255
    with running_server(bundle) as (url, _):
        status, body = http("POST", f"{url}/score?map=array", png_bytes(img))
    values = np.array(body["anomaly_map"]["values"])
    # max-reduced tiled score: the map's maximum IS the score, so its peak is score/threshold
    assert status == 200 and values.max() == pytest.approx(body["score"] / 0.1, rel=1e-3)


def test_top_group_only_with_a_significant_attribution(tmp_path):
    bundle = make_bundle(tmp_path / "s", threshold=1.0)
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["attribution"] = {"p_value": 0.001, "alpha": 0.01, "significant": True}
    path.write_text(json.dumps(manifest))
    with running_server(bundle) as (url, _):
        _, body = http("POST", f"{url}/score", png_bytes(spot_frame()))
    assert body["top_group"] == 0 and body["top_group_share"] > 0.9  # the spot's quadrant
