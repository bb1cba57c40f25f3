from p2p.messages import UpdateAnnouncement, decode, encode
from p2p.peer_process import _build_message

SENDER = "0x" + "ab" * 20
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
PEER = "16Uiu2HAmQtRgSmuwHTbKpe6fw2ZQ2RtpvwuHYJJgXHH1oGyy4BKk"


def test_update_announcement_with_providers_from_a_json_command() -> None:
    cmd = {
        "type": "update",
        "round": 3,
        "fields": {"sha256": "00" * 32, "cid": CID, "size": 10, "providers": [PEER]},
    }

    message = _build_message(cmd, "run-1", SENDER)

    assert isinstance(message, UpdateAnnouncement)
    assert message.providers == (PEER,)
    assert decode(encode(message)) == message
