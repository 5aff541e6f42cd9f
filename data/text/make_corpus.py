"""Write train.txt and test.txt: the harbour log of Varnholm, an invented port, for continued pretraining.

Raw text, no chat: one log entry per paragraph (blank lines between). The town, its ships and its way of
writing exist nowhere else, so a model has never seen them: continued pretraining (task=cpt) on train.txt
should lower the perplexity of the held-out entries in test.txt, which share the names and the style but
not the sentences. Deterministic: run it again and both files are the same.
    python data/text/make_corpus.py
"""

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIPS = ["Grey Heron", "Saltmarrow", "Ninefold", "Brannock's Pride", "Little Oskeld", "Weatherly Ann",
         "Cold Lantern", "Tirrow", "Mistle", "Queen of Osk"]
MASTERS = ["Ebba Thorn", "Malkin Voss", "Idrun Pell", "Corvo Anst", "Hessa Lind", "Jory Quill"]
CARGO = ["salted cod", "tar barrels", "wool bales", "lamp oil", "river slate", "juniper spirit", "rope",
         "copper nails", "dried kelp", "oak staves"]
WINDS = ["a hard northerly", "a soft westerly", "no wind to speak of", "a gusting easterly",
         "the Oskeld gale", "a wet southerly"]
BERTHS = ["the Long Quay", "the Tarrow steps", "the old customs berth", "the east mole", "Pell's slip"]
OPENINGS = ["Entered this day", "Logged at the harbour office", "By the hand of the wharfinger",
            "Noted for the Varnholm harbour board"]


def entry(rng: random.Random) -> str:
    day, month, year = rng.randint(1, 28), rng.randint(1, 12), rng.randint(1791, 1820)
    ship, master = rng.choice(SHIPS), rng.choice(MASTERS)
    cargo = rng.sample(CARGO, 2)
    tons = rng.randint(12, 140)
    return (f"{rng.choice(OPENINGS)}, day {day} of month {month}, {year}. The {ship}, master "
            f"{master}, came in under {rng.choice(WINDS)} and made fast at {rng.choice(BERTHS)}. She carried "
            f"{tons} tons of {cargo[0]} and some {cargo[1]}, and paid the Varnholm toll of "
            f"{rng.randint(2, 30)} marks. The wharfinger found her papers in order.")


if __name__ == "__main__":
    rng = random.Random(0)
    entries = [entry(rng) for _ in range(330)]
    (HERE / "train.txt").write_text("\n\n".join(entries[:300]) + "\n", encoding="utf-8")
    (HERE / "test.txt").write_text("\n\n".join(entries[300:]) + "\n", encoding="utf-8")
    print(f"wrote {HERE / 'train.txt'} (300 entries) and {HERE / 'test.txt'} (30)")
