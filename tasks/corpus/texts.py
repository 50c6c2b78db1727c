"""What the synthetic speakers say: keyword vocabularies (Speech Commands) and a bank of plain sentences.

The sentences were written for this project; they are short (≈2–4 s at espeak-ng's speeds), varied in phonetic
content and free of names so that no sentence gives away who is speaking.
"""

from __future__ import annotations

# The ten command words of Speech Commands (v1 and v2 alike); everything else is "_unknown_" in the 12-class task.
COMMAND_WORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")

# Auxiliary words of the real vocabularies (v1 has 30 words, v2 adds backward/forward/follow/learn/visual = 35).
V1_AUXILIARY: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                                 "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow")
V2_AUXILIARY: tuple[str, ...] = V1_AUXILIARY + ("backward", "forward", "follow", "learn", "visual")

SENTENCES: tuple[str, ...] = (
    "The morning train was late again because of the fog.",
    "Please put the blue cups on the second shelf.",
    "A small boat drifted slowly across the quiet lake.",
    "We should check the weather before we leave tomorrow.",
    "The old clock in the hall stopped at half past nine.",
    "Fresh bread smells wonderful on a cold winter day.",
    "Turn left at the bridge and follow the river north.",
    "The children built a tall tower out of wooden blocks.",
    "Nobody expected the meeting to last the whole afternoon.",
    "Bright yellow leaves covered the path through the park.",
    "Could you send me the report by the end of the week?",
    "The kettle whistled while the rain tapped on the window.",
    "Seven tired hikers reached the summit just before sunset.",
    "She painted the fence a pale shade of green.",
    "The library closes early on public holidays.",
    "A sudden gust of wind scattered the papers everywhere.",
    "Our neighbours keep three chickens in their back garden.",
    "The recipe needs two eggs, flour and a pinch of salt.",
    "Thunder rolled over the hills long after the lightning.",
    "He forgot his umbrella on the bus this morning.",
    "The museum opened a new exhibition about ancient maps.",
    "Every evening the owl calls from the top of the barn.",
    "Keep the door closed so the cat does not get out.",
    "The market sells oranges, lemons and fresh figs.",
    "A long queue formed outside the bakery at dawn.",
    "The engineer measured the bridge twice to be sure.",
    "Quiet music played softly in the empty cafe.",
    "The river rose quickly after a week of heavy rain.",
    "Pack a warm jacket because the nights are chilly.",
    "The puzzle was missing only one corner piece.",
    "They planted tomatoes and beans along the south wall.",
    "The lighthouse beam swept across the dark water.",
    "Write your answers clearly in the boxes provided.",
    "The orchestra tuned their instruments before the concert.",
    "A red kite circled high above the open field.",
    "The shop on the corner repairs bicycles and clocks.",
    "Snow fell all night and covered the sleeping town.",
    "Remember to water the plants while I am away.",
    "The professor explained the idea with a simple drawing.",
    "Heavy trucks rumbled past the school every morning.",
)
