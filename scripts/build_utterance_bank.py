"""Build fpi/data/utterances.json, the simulator's bank of real utterances, from SLURP.

SLURP (Bastianelli et al., EMNLP 2020) textual data is CC BY 4.0; the bank keeps
the credit and the licence notice. Rerun: python scripts/build_utterance_bank.py [SLURP_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLURP = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "slurp"
OUT = ROOT / "fpi" / "data" / "utterances.json"

DOMAINS = {
    "iot": "smart_home", "play": "music", "music": "music", "audio": "music",
    "weather": "weather", "lists": "shopping", "takeaway": "shopping",
    "alarm": "timers", "datetime": "timers", "qa": "knowledge", "general": "knowledge",
    "news": "knowledge", "recommendation": "knowledge", "cooking": "knowledge",
    "calendar": "calendar", "email": "communication", "social": "communication",
    "transport": "travel",
}
# Slots that entity resolution maps to a catalogue id; the rest (dates, times) are values.
RESOLVABLE = {
    "device_type", "house_place", "person", "place_name", "song_name", "artist_name",
    "playlist_name", "radio_name", "business_name", "list_name", "podcast_name",
    "audiobook_name", "app_name", "game_name", "music_genre", "relation", "transport_agency",
    "movie_name", "audiobook_author", "color_type", "news_topic", "currency_name",
}
# Requests an assistant cannot do: with every stage right, these are not defects.
UNSUPPORTED = [
    "make me a sandwich", "do my laundry", "clean the kitchen", "walk the dog for me",
    "book me a flight to mars", "drive me to work", "fold the towels", "wash the dishes",
    "mow the lawn", "cook dinner for me", "take out the trash", "feed the cat",
    "iron my shirt", "paint the fence", "fix my car", "water the garden",
    "pay my rent in cash", "brush my teeth", "tie my shoes", "bring me a coffee",
    "open the fridge and get me a beer", "vacuum under the couch", "change the baby",
    "go to the store for me", "teleport me home", "make the bed", "fly me to the moon",
    "repair the leaking tap", "pick up the kids from school", "print a pizza",
]


def _entities(record: dict) -> list[dict]:
    tokens = [t["surface"] for t in record["tokens"]]
    out = []
    for entity in record["entities"]:
        value = " ".join(tokens[i] for i in entity["span"])
        out.append({"slot": entity["type"], "value": value, "resolvable": entity["type"] in RESOLVABLE})
    return out


def main() -> None:
    utterances, seen = [], set()
    for name in ("devel.jsonl", "test.jsonl"):
        for line in (SLURP / name).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            text = record["sentence"].strip().lower()
            if not text or text in seen:
                continue
            seen.add(text)
            utterances.append({"text": text, "domain": DOMAINS[record["scenario"]],
                               "intent": record["intent"], "slots": _entities(record)})
    utterances.sort(key=lambda u: (u["domain"], u["intent"], u["text"]))
    bank = {
        "credit": "Utterances, intents and entity annotations from SLURP: A Spoken Language "
                  "Understanding Resource Package (Bastianelli, Vanzo, Swietojanski, Rieser; EMNLP 2020), "
                  "https://github.com/pswietojanski/slurp. Domain names mapped by fpi.",
        "license": "Textual part of this dataset is released under Creative Commons Attribution 4.0 "
                   "International (CC BY 4.0) license. See https://creativecommons.org/licenses/by/4.0/ "
                   "for a human readable summary, or https://creativecommons.org/licenses/by/4.0/legalcode "
                   "for the full legal notice.",
        "utterances": utterances,
        "unsupported": UNSUPPORTED,
    }
    OUT.write_text(json.dumps(bank, ensure_ascii=False, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {OUT} with {len(utterances)} utterances")


if __name__ == "__main__":
    main()
