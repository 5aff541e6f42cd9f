"""Write general_mc.jsonl: 40 general-knowledge questions, four choices each, for measuring forgetting.

Notebook 05 scores the base model and the dates-tuned adapter on it (task ftlab_general_mc): a drop after
tuning on dates is knowledge the narrow fine-tune cost. The questions are plain facts a small instruct
model mostly knows; the first choice written here is the right one, and the order is shuffled with a fixed
seed, so running this again writes the same file.
    python data/lm_eval/make_general_mc.py
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUESTIONS = [  # (question, [right answer, three wrong ones])
    ("What is the capital of France?", ["Paris", "Lyon", "Marseille", "Nice"]),
    ("How many days are in a week?", ["Seven", "Five", "Ten", "Six"]),
    ("What is the largest planet in the Solar System?", ["Jupiter", "Earth", "Mars", "Venus"]),
    ("Which gas do plants take from the air for photosynthesis?", ["Carbon dioxide", "Oxygen", "Nitrogen", "Helium"]),
    ("What is the chemical formula of water?", ["H2O", "CO2", "NaCl", "O2"]),
    ("At what temperature in degrees Celsius does water boil at sea level?", ["100", "50", "0", "212"]),
    ("Who wrote the play Romeo and Juliet?", ["William Shakespeare", "Charles Dickens", "Jane Austen", "Mark Twain"]),
    ("What is the capital of Japan?", ["Tokyo", "Kyoto", "Osaka", "Beijing"]),
    ("How many legs does a spider have?", ["Eight", "Six", "Ten", "Four"]),
    ("What is 7 times 8?", ["56", "54", "48", "64"]),
    ("Which is the largest ocean on Earth?", ["The Pacific Ocean", "The Atlantic Ocean", "The Indian Ocean",
                                             "The Arctic Ocean"]),
    ("At what temperature in degrees Celsius does water freeze?", ["0", "10", "-10", "32"]),
    ("Which planet is known as the Red Planet?", ["Mars", "Venus", "Jupiter", "Saturn"]),
    ("What is the capital of Italy?", ["Rome", "Milan", "Naples", "Turin"]),
    ("How many hours are in a day?", ["24", "12", "20", "36"]),
    ("What do bees make from flower nectar?", ["Honey", "Milk", "Silk", "Cotton"]),
    ("What is the square root of 81?", ["9", "8", "7", "18"]),
    ("In which country are the pyramids of Giza?", ["Egypt", "Mexico", "Peru", "Greece"]),
    ("What is the main language spoken in Brazil?", ["Portuguese", "Spanish", "French", "English"]),
    ("How many sides does a triangle have?", ["Three", "Four", "Five", "Six"]),
    ("What is the capital of Germany?", ["Berlin", "Munich", "Hamburg", "Frankfurt"]),
    ("Which metal is liquid at room temperature?", ["Mercury", "Iron", "Gold", "Copper"]),
    ("What is the hardest natural material?", ["Diamond", "Gold", "Iron", "Chalk"]),
    ("Who painted the Mona Lisa?", ["Leonardo da Vinci", "Vincent van Gogh", "Pablo Picasso", "Claude Monet"]),
    ("What is the largest animal that has ever lived?", ["The blue whale", "The African elephant", "The giraffe",
                                                         "The hippopotamus"]),
    ("How many minutes are in an hour?", ["60", "100", "30", "24"]),
    ("What is the capital of Spain?", ["Madrid", "Barcelona", "Seville", "Valencia"]),
    ("Which organ pumps blood through the body?", ["The heart", "The liver", "The lungs", "The kidneys"]),
    ("What is 15 plus 27?", ["42", "32", "41", "52"]),
    ("Which star is closest to Earth?", ["The Sun", "Sirius", "Polaris", "Betelgeuse"]),
    ("What is the capital of Canada?", ["Ottawa", "Toronto", "Vancouver", "Montreal"]),
    ("How many strings does a standard guitar have?", ["Six", "Four", "Eight", "Twelve"]),
    ("What is the currency of Japan?", ["The yen", "The euro", "The dollar", "The pound"]),
    ("What color do you get by mixing blue and yellow paint?", ["Green", "Purple", "Orange", "Red"]),
    ("Which element has the chemical symbol O?", ["Oxygen", "Gold", "Silver", "Iron"]),
    ("What is the highest mountain above sea level?", ["Mount Everest", "K2", "Mont Blanc", "Kilimanjaro"]),
    ("How many players does one football (soccer) team have on the field?", ["Eleven", "Nine", "Seven", "Fifteen"]),
    ("What is the capital of Australia?", ["Canberra", "Sydney", "Melbourne", "Perth"]),
    ("How many months are in a year?", ["Twelve", "Ten", "Eleven", "Thirteen"]),
    ("What is the opposite of hot?", ["Cold", "Warm", "Loud", "Bright"]),
]


def rows() -> list[dict]:
    rng = random.Random(0)
    out = []
    for question, choices in QUESTIONS:
        order = choices[:]
        rng.shuffle(order)
        out.append({"question": question, "choices": order, "gold": order.index(choices[0])})
    return out


if __name__ == "__main__":
    path = HERE / "general_mc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows()), encoding="utf-8")
    print(f"wrote {path} ({len(QUESTIONS)} questions)")
