"""Built-in synthetic corpus: short children's stories from a seeded story grammar.

The generator is offline, standard-library only, and deterministic: story ``i`` of seed ``s`` is
produced by its own ``random.Random(f"{s}:{i}")`` (string seeds are hashed with SHA-512, so they are
stable across processes and platforms), so any prefix, slice or parallel shard of the corpus is the
same text whatever ``n`` it was generated with.

Grammar
-------
A story is a *cast*, a *setting* and an *arc*:

* **Cast.** A hero -- a child ("a little girl named Lily") or an animal ("a playful dog named Max") --
  with a fixed gender and the matching pronouns, a friend (named the same way), and an unnamed parent
  ("Mom" or "Dad"). Unnamed people are always written out in full, never pronominalised.
* **Setting.** One place (park, forest, kitchen, ...) with its own hiding spots, sights and
  activities, so everything that happens there fits the place, and it stays the same for the story.
* **Arc.** One of ten plot templates: a lost object, a new friend, a fear overcome, a quarrel over
  a toy, helping someone, a family trip, a bad weather day, a broken toy mended, a home-made gift,
  and a garden that needs patience. Each arc runs beginning (introduce the cast and the place) ->
  problem -> attempts -> resolution, often followed by a moral ("From that day on, ..."). Every
  sentence slot has several variants and draws from the word lists below, so stories differ in
  wording and content while staying predictable from their own context: the object lost is the
  object found, the speaker thanked is the one who helped, and so on.

Reference rule (what makes entity tracking pay off, and what the tests check): a sentence's *first
mention* of a person, outside quoted speech, is either a name or a pronoun (he/she, him/her,
his/her); a pronoun is only ever used there for the character named by the previous such mention.
:class:`_Teller` enforces this by remembering the subject of the last sentence and only offering a
pronoun for that character. Dialogue is in double quotes with attribution ('"Thank you!" said Lily.').

Length: each story draws a *density* (how many of the arc's optional sentences it tells: extra
traits, feelings, search spots, dialogue, the moral) and a target length, then inserts scenery
sentences of its place (which mention nobody, so they can go anywhere) towards that target. Every
story holds ``MIN_WORDS`` to ``MAX_WORDS`` whitespace-separated words (about 150 on average). The text is plain ASCII with ordinary capitalisation and no digits; no
word is written in all capitals (the probe task's codewords are all-caps words).
"""
from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

MIN_WORDS = 80
MAX_WORDS = 250
_MAX_SCENERY = 3        # at most this many scenery sentences (times the density) lengthen a story
_DENSITIES = (0.25, 0.6, 1.0, 1.4, 2.0)   # how many optional parts a story tells (terse, average, wordy)
_PRONOUN_RATE = 0.6     # how often a character who may be pronominalised is
_T = TypeVar("_T")


def _split(text: str) -> tuple[str, ...]:
    """A word list written as one '|'-separated string."""
    return tuple(text.split("|"))


def _a(phrase: str) -> str:
    """The phrase with its indefinite article ("a ball", "an apple")."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


# ---------------------------------------------------------------------------- word lists: cast
_GIRLS = _split("Lily|Mia|Emma|Sara|Anna|Lucy|Zoe|Ella|Grace|Ruby|Chloe|Amy|Maya|Nora|Hannah|Sophie|Olivia|"
                "Ava|Isla|Rosa|Ivy|Clara|Alice|Julia|Kate|Molly|Jenny|Nina|Tina|Poppy|Hazel|Leah|Stella|"
                "Fiona|Greta|Willow|Amara|Priya|Mei|Aisha|Elena|Freya|Lena|Iris")
_BOYS = _split("Tom|Ben|Sam|Leo|Jack|Tim|Noah|Liam|Ethan|Oliver|Jacob|Lucas|Finn|Owen|Henry|Theo|Adam|"
               "Ryan|Kevin|Danny|Jake|Luke|Mark|Peter|Paul|Alex|Eli|Arlo|Hugo|Felix|Omar|Ravi|Kai|Jonah|"
               "Caleb|Simon|Nico|Ezra|Mateo|Joe|Bruno|Ivan")
_PET_NAMES = _split("Max|Buddy|Spot|Whiskers|Fluffy|Coco|Pip|Bella|Rusty|Patch|Bubbles|Snowball|Rex|Bingo|"
                    "Dotty|Sparky|Shadow|Fuzzy|Pogo|Squeak|Boots|Scout|Pickles|Bolt|Ziggy|Tumble|Clover|"
                    "Mittens|Skipper|Noodle|Dash|Bramble|Rolo|Trixie|Gus|Olive|Hopper|Wiggles|Misty|Fern")
_PERSON_ADJS = _split("little|kind|curious|happy|cheerful|brave|shy|playful|clever|gentle|friendly|small|"
                      "young|busy|sweet|lively|thoughtful|silly|bouncy|chatty|quiet|sleepy|careful|helpful")
_CHILD_LOOKS = _split("curly red hair|long black braids|bright blue eyes|rosy cheeks|short spiky hair|"
                      "a big friendly smile|round glasses|freckles on the nose|a bright yellow raincoat|"
                      "two little pigtails|a missing front tooth|messy brown hair|a striped sweater")
# (kind, body features, the sound it makes)
_ANIMALS = (
    ("dog", _split("a waggy tail|floppy ears|soft brown fur|a wet black nose"), "barked"),
    ("puppy", _split("big paws|a spotty coat|floppy ears"), "yipped"),
    ("cat", _split("long whiskers|soft gray fur|bright green eyes"), "meowed"),
    ("kitten", _split("tiny paws|fluffy white fur|a pink nose"), "mewed"),
    ("bunny", _split("long ears|a fluffy white tail|a twitchy nose"), "squeaked"),
    ("duck", _split("orange feet|shiny feathers|a flat yellow bill"), "quacked"),
    ("bear", _split("thick brown fur|big round ears|a round belly"), "growled"),
    ("fox", _split("a bushy red tail|pointy ears|quick feet"), "yipped"),
    ("mouse", _split("tiny pink ears|a long thin tail|shiny black eyes"), "squeaked"),
    ("owl", _split("big round eyes|soft brown feathers"), "hooted"),
    ("frog", _split("long legs|bright green skin|a wide mouth"), "croaked"),
    ("squirrel", _split("a bushy tail|quick little paws"), "chattered"),
    ("pig", _split("a curly tail|a pink snout"), "oinked"),
    ("lamb", _split("soft white wool|wobbly legs"), "bleated"),
    ("turtle", _split("a hard green shell|slow, steady legs"), "hummed"),
    ("hedgehog", _split("prickly spines|a tiny black nose"), "sniffed"),
    ("penguin", _split("black and white feathers|flat orange feet"), "squawked"),
    ("elephant", _split("a long trunk|big floppy ears"), "trumpeted"),
    ("monkey", _split("a long curly tail|quick hands"), "chattered"),
    ("pony", _split("a shiny mane|strong legs"), "neighed"),
    ("goat", _split("little horns|a funny beard"), "bleated"),
    ("chick", _split("fluffy yellow feathers|tiny feet"), "peeped"),
    ("raccoon", _split("a striped tail|a black mask of fur"), "chirped"),
    ("dragon", _split("tiny wings|shiny green scales"), "puffed smoke"),
)
_CHILD_HOMES = _split("a small house near the park|a yellow house on a hill|a cozy cottage by the woods|"
                      "a tall apartment building in the city|a little town by the sea|"
                      "a white farmhouse with a red roof|a blue house at the end of a quiet street|"
                      "a village with an old stone bridge")
_ANIMAL_HOMES = _split("a cozy den in the woods|a hole under an old oak tree|a warm barn on a farm|"
                       "a nest high up in a tree|a little house by the pond|a burrow under a hill|"
                       "a big garden behind a white house|a basket by the fireplace")
_HOBBIES = _split("sing songs|draw pictures|climb trees|read books|build towers with blocks|dance|"
                  "run as fast as the wind|look at the stars|dig in the sand|jump in puddles|"
                  "chase butterflies|ride a bike|play hide and seek|make mud pies|count the clouds|"
                  "paint with bright colors|collect pretty stones|tell funny jokes|play the drum|"
                  "help in the garden|watch the birds|make paper planes|skip rope|hum little tunes|"
                  "listen to bedtime stories|splash in the bath|roll down grassy hills|fly kites|feed the ducks|"
                  "play with toy trains|build sandcastles|look for bugs under rocks|make up songs|play dress-up|"
                  "do puzzles|bounce on the bed|water the plants|play the piano|jump on the trampoline")
_GREETED = _split("the sun|the birds in the garden|the old tree by the gate|the neighbor's cat|the mail carrier|"
                  "the flowers on the windowsill|the goldfish in its bowl|the baker across the street|"
                  "the ducks on the pond|the bus driver|the little snail on the step|the clouds in the sky")
_RELATIVES = _split("grandma|grandpa|aunt|uncle|big sister|big brother|mom|dad")
_OPENERS = _split("Once upon a time|Long ago|Not long ago|Once|In a land not far away|Many years ago")
_WHEN = _split("One day|One morning|One afternoon|Later that week|The next day|One sunny afternoon|"
               "On Saturday|After lunch|After breakfast")

# ---------------------------------------------------------------------------- word lists: things
_COLORS = _split("red|blue|green|yellow|orange|purple|pink|brown|white|black|gray|golden|silver|"
                 "striped|spotted|shiny|sparkly|bright red|light blue|dark green|rainbow")
_LOSABLE = _split("ball|kite|teddy bear|doll|toy car|toy train|toy boat|toy plane|robot|yo-yo|drum|whistle|"
                  "crayon|paintbrush|storybook|hat|scarf|mitten|shoe|boot|sock|bucket|shovel|cup|blanket|"
                  "pillow|backpack|lunchbox|necklace|bracelet|ring|crown|magic wand|seashell|marble|button|"
                  "key|bell|feather|ribbon|hair bow|jump rope|scooter|wagon|flute|harmonica|spinning top|"
                  "toy block|sticker|treasure map|compass|lantern|flashlight|umbrella|raincoat|sunglasses|"
                  "watch|coin|piggy bank|drawing|notebook|pencil|bubble wand|toy dinosaur|toy horse|"
                  "stuffed bunny|puppet|tambourine|cape|mask|snow globe|music box|basket|glove|tiara|medal|"
                  "toy rocket|magnifying glass|fishing net|rubber duck|pinwheel|toy truck|fire truck|"
                  "toy guitar|locket|hairbrush|water bottle|paper crown|toy penguin|beanbag")
_JUNK = _split("an old sock|a pine cone|a shiny stone|a sleepy snail|a crumpled leaf|a lost button|"
               "a little beetle|a bottle cap|some dust|a broken crayon|a tiny spider|an empty box|"
               "a candy wrapper|a ladybug|an acorn|a muddy glove|a paper clip")
_THIEVES = _split("squirrel|puppy|crow|kitten|goat|magpie|raccoon|little mouse")
_FOODS = _split("apple slices|warm cookies|jam sandwiches|cheese sandwiches|ripe strawberries|a bowl of soup|"
                "pancakes with honey|a slice of pie|fresh bread|popcorn|ice cream|grapes|carrot sticks|"
                "crackers|lemonade|warm milk|hot chocolate|blueberry muffins|noodles|corn on the cob|"
                "watermelon|cherries|peaches|plums|cupcakes|pizza|tomato soup|scrambled eggs|"
                "toast with jam|yogurt|oatmeal|banana bread|apple pie|cinnamon rolls|rice pudding|"
                "orange slices|pretzels|fruit salad|waffles with syrup|mashed potatoes|carrot cake|honey on toast|"
                "cheese and crackers|vegetable soup|chocolate pudding|peanut butter cookies|baked apples|berry pie|"
                "pumpkin bread|sweet potatoes|dumplings|lemon cake|macaroni and cheese|rice with peas")
_GAMES = _split("tag|hide and seek|catch|leapfrog|pirates|follow the leader|hopscotch|red light, green light|"
                "make-believe|duck, duck, goose")
_SKILLS = _split("skip a stone|make a paper boat|do a cartwheel|hop on one foot|whistle a tune|"
                 "tie a bow|build a tall tower|draw a star|balance a stick on one finger|make a daisy chain|"
                 "juggle two balls|blow a big bubble|fold a paper hat|stand on one leg like a flamingo|"
                 "make a bird call|count backwards")
_FAIR_WEATHER = _split("The sun was shining brightly.|The sky was blue and clear.|A soft breeze blew.|"
                       "White clouds floated by like cotton balls.|It was a warm and sunny day.|"
                       "The air smelled fresh and sweet.")
_CLOSINGS = _split("That night, {name} fell asleep with a smile.|It had been a very good day.|"
                   "{name} could not wait to tell {his} {relative} all about it.|"
                   "When the sun went down, everyone went home happy.|"
                   "{name} hugged {his} {p} and said goodnight.|Everyone smiled.")


class _Place(NamedTuple):
    name: str                   # "the park"
    at: str                     # "at the park"
    hides: tuple[str, ...]      # where a small thing can be: "under the bench"
    sights: tuple[str, ...]     # whole sentences that mention nobody
    acts: tuple[str, ...]       # past-tense activities: "played on the swings"
    outdoor: bool


def _place(prep: str, name: str, hides: str, sights: str, acts: str, outdoor: bool) -> _Place:
    return _Place(name, f"{prep} {name}", _split(hides), _split(sights), _split(acts), outdoor)


_PLACES = (
    _place("at", "the park", "under the bench|behind a big tree|in the tall grass|near the pond|under the slide|"
           "in a pile of leaves", "Birds sang in the trees.|Ducks swam in the pond.|The grass was green and soft.|"
           "Children laughed on the swings.|A man was selling balloons by the gate.",
           "played on the swings|went down the slide|fed the ducks|ran across the grass|played catch", True),
    _place("in", "the forest", "under a pile of leaves|behind a mossy log|near an old stump|under a fern|"
           "between two rocks|inside a hollow tree", "Tall trees reached up to the sky.|"
           "Sunlight peeked through the leaves.|A woodpecker tapped on a tree.|Mushrooms grew near the path.|"
           "The air smelled like pine.", "picked berries|collected pine cones|followed a winding path|"
           "built a little hut from sticks|looked for mushrooms", True),
    _place("on", "the beach", "under a towel|behind a big rock|in the sand|next to a sandcastle|near the water|"
           "under an umbrella", "Waves rolled onto the shore.|Seagulls flew over the water.|"
           "The sand was warm and soft.|Little crabs ran across the sand.|The sea sparkled in the sun.",
           "built a sandcastle|splashed in the waves|collected shells|dug a deep hole|flew a kite", True),
    _place("in", "the garden", "under a bush|behind the flower pots|in the vegetable patch|"
           "near the watering can|under the big sunflowers", "Bees buzzed around the flowers.|"
           "Butterflies danced over the roses.|The tomatoes were red and ripe.|A little worm wiggled in the dirt.",
           "watered the flowers|dug in the dirt|picked strawberries|chased butterflies", True),
    _place("in", "the backyard", "under the porch|behind the shed|in the sandbox|under the hammock|by the fence",
           "The clothes on the line flapped in the wind.|A robin hopped across the lawn.|The old swing creaked.",
           "jumped on the trampoline|played in the sandbox|ran through the sprinkler|swung on the old swing",
           True),
    _place("in", "the kitchen", "under the table|behind the bread box|in a drawer|inside a big pot|"
           "on top of the fridge|under a chair", "The kitchen smelled like fresh bread.|"
           "A pot of soup bubbled on the stove.|The clock on the wall went tick, tock.|"
           "Sunlight came in through the window.", "helped make pancakes|stirred the cake batter|"
           "washed the dishes|set the table", False),
    _place("in", "the living room", "under the sofa|behind a cushion|in the toy box|under the rug|"
           "behind the curtains|next to the bookshelf", "A fire crackled in the fireplace.|"
           "The old cat slept on the big chair.|Soft music played on the radio.", "built a tower with blocks|"
           "played a board game|danced to music|made a fort with pillows", False),
    _place("in", "the bedroom", "under the bed|in the closet|behind the door|under the pillow|"
           "in the laundry basket|inside a shoe box", "Stars were painted on the ceiling.|"
           "Toys were all over the floor.|A night light glowed in the corner.", "played with dolls|"
           "read picture books|jumped on the bed|drew pictures", False),
    _place("at", "school", "in the cubby|under a desk|behind the bookshelf|in the lost and found box|"
           "near the coat hooks", "The teacher smiled at the class.|Colorful pictures hung on the walls.|"
           "The bell rang loudly.", "painted pictures|sang songs with the class|counted beads|"
           "listened to a story", False),
    _place("at", "the playground", "under the slide|in the sandpit|behind the climbing frame|near the seesaw|"
           "under the monkey bars", "Kids were laughing and shouting.|The swings went up and down.|"
           "The slide shone in the sun.", "climbed the monkey bars|rode the seesaw|played tag|"
           "went down the twisty slide", True),
    _place("on", "the farm", "in the hay|behind the barn|near the chicken coop|under the tractor|"
           "by the water trough", "Cows mooed in the field.|Chickens pecked at the ground.|"
           "A big red tractor stood by the barn.|Pigs rolled in the mud.", "fed the chickens|"
           "rode on the tractor|collected eggs|petted the baby goats", True),
    _place("at", "the zoo", "near the monkey house|under a bench|by the penguin pool|beside the snack stand",
           "Monkeys swung from branch to branch.|A big lion yawned in the sun.|"
           "The giraffes ate leaves from the tall trees.", "watched the penguins swim|fed the goats|"
           "looked at the elephants", True),
    _place("by", "the lake", "near the dock|under a canoe|in the reeds|behind a rock", "The water was calm and blue.|"
           "Fish jumped out of the water.|A heron stood on one leg.", "skipped stones|went fishing|"
           "paddled a little boat", True),
    _place("by", "the river", "between the rocks|under the bridge|in the tall reeds|near a fallen log",
           "The river gurgled over the stones.|A frog sat on a lily pad.|Dragonflies zipped over the water.",
           "threw sticks into the water|looked for frogs|waded in the shallow water", True),
    _place("in", "the meadow", "in the tall grass|under a patch of clover|behind a hay bale|near a rabbit hole",
           "Wildflowers grew everywhere.|Grasshoppers jumped in the grass.|Butterflies fluttered over the flowers.",
           "picked flowers|rolled down the hill|chased grasshoppers", True),
    _place("on", "the hill", "behind a big rock|in a bush|under the tree at the top",
           "From the top, the whole town looked tiny.|The wind whistled softly.|Sheep grazed on the slope.",
           "rolled down the grassy slope|flew a kite|raced to the top", True),
    _place("at", "the library", "behind the big books|under a reading chair|on a high shelf|in the book cart",
           "The library was very quiet.|Rows of books went up to the ceiling.|The librarian smiled.",
           "read a book about dinosaurs|listened to story time|looked at picture books", False),
    _place("at", "the market", "under a fruit stand|in a basket of apples|behind some boxes",
           "People were buying fruit and bread.|The air smelled of fresh flowers.|A man sold honey in jars.",
           "picked out apples|bought some bread|tasted a sweet peach", True),
    _place("at", "the bakery", "under the counter|behind a tray of rolls|by the door",
           "Warm bread sat in the window.|The baker wore a tall white hat.|"
           "The whole shop smelled of butter and sugar.", "chose a cupcake|watched the baker knead dough", False),
    _place("at", "the toy shop", "behind the teddy bears|under a shelf|in a box of blocks",
           "Shelves were full of toys.|A toy train went round and round on a track.",
           "looked at the toy trains|played with the puppets", False),
    _place("at", "the campsite", "inside the tent|under a sleeping bag|by the campfire|behind the woodpile",
           "The campfire crackled and popped.|Owls hooted in the dark woods.|The stars twinkled above.",
           "roasted marshmallows|told stories by the fire|went on a night walk", True),
    _place("in", "the treehouse", "in a corner|under a blanket|in the rope basket",
           "The leaves rustled all around.|A little bird sat on the window.", "played pirates|"
           "had a picnic|looked through a spyglass", True),
    _place("at", "the swimming pool", "under a towel|by the lockers|near the diving board",
           "The water was cool and blue.|The lifeguard sat in a tall chair.", "splashed in the water|"
           "swam with a float|jumped in the shallow end", True),
    _place("in", "the attic", "in an old trunk|behind a dusty box|under an old blanket",
           "Dust floated in the light.|Old pictures leaned against the wall.", "looked through old boxes|"
           "tried on funny old hats", False),
    _place("in", "the barn", "in the hay|behind a bale of straw|near the horse stall",
           "A horse munched on hay.|Kittens slept in a pile of straw.", "climbed on the hay bales|"
           "brushed the old horse", False),
    _place("in", "the orchard", "under an apple tree|in a basket|behind a ladder",
           "The trees were heavy with fruit.|Bees hummed among the blossoms.", "picked apples|"
           "climbed a low branch", True),
    _place("by", "the pond", "in the reeds|near the old bench|under a willow tree",
           "Frogs croaked in the reeds.|Dragonflies zoomed over the water.", "looked for tadpoles|"
           "fed the ducks", True),
    _place("in", "the town square", "near the fountain|under a bench|behind a flower box",
           "Water splashed in the fountain.|Pigeons pecked at crumbs.", "threw a coin into the fountain|"
           "watched a juggler", True),
    _place("in", "the bathroom", "behind the bath mat|under the sink|in the laundry basket",
           "Bubbles filled the bathtub.|The mirror was foggy.", "played with bath toys|"
           "blew bubbles", False),
    _place("at", "the museum", "under a bench|near the dinosaur bones|by the gift shop",
           "A giant dinosaur skeleton stood in the hall.|Old paintings hung on the walls.",
           "looked at old paintings|saw a real space suit", False),
    _place("at", "the train station", "under a bench|near the ticket booth|by the big clock",
           "Trains whistled as they came in.|People hurried by with suitcases.", "waved at the trains|"
           "watched the trains come and go", False),
    _place("at", "the harbor", "near the fishing nets|behind a pile of ropes|by the boats",
           "Boats bobbed in the water.|Seagulls cried over the docks.", "watched the fishing boats|"
           "counted the sails", True),
    _place("in", "the sunflower field", "between the tall sunflowers|by the fence|under a big leaf",
           "The sunflowers were taller than a grown-up.|Bees buzzed from flower to flower.",
           "walked between the flowers|played hide and seek among the stalks", True),
    _place("at", "Grandma's house", "under the rocking chair|in the sewing basket|behind the old clock",
           "The house smelled like cookies.|An old clock ticked in the hall.", "baked cookies with Grandma|"
           "played cards with Grandpa", False),
    _place("at", "the fair", "near the merry-go-round|under the popcorn stand|behind the ticket booth",
           "Music played from the merry-go-round.|Colorful lights blinked everywhere.", "rode the merry-go-round|"
           "won a prize", True),
    _place("on", "the mountain", "behind a big rock|under a pine tree|near a little stream",
           "Snow sat on the tops of the mountains.|An eagle flew high above.", "hiked up a steep trail|"
           "drank from a cold stream", True),
    _place("at", "the doctor's office", "under the waiting chairs|behind the toy box|near the fish tank",
           "A fish tank bubbled in the waiting room.|Picture books lay on a little table.|"
           "The nurse had a kind smile.", "read a picture book|watched the fish in the tank", False),
    _place("at", "the pet shop", "behind the fish tanks|under a bag of dog food|near the bird cages",
           "Puppies yipped in their pens.|Goldfish swam in round bowls.", "watched the goldfish|"
           "held a soft hamster", False),
)
_PLACE = {p.name: p for p in _PLACES}
_OUTDOOR = tuple(p for p in _PLACES if p.outdoor)
_PRIVATE = ("the kitchen", "the living room", "the bedroom", "the attic", "the bathroom", "Grandma's house",
            "the doctor's office")
_PUBLIC = tuple(p for p in _PLACES if p.name not in _PRIVATE)     # where a hero can meet someone new


# ---------------------------------------------------------------------------- characters and the teller
class _Char:
    """A named character with fixed pronouns."""

    __slots__ = ("name", "female", "kind", "intro", "looks", "sound", "he", "him", "his", "He", "His")

    def __init__(self, name: str, female: bool, kind: str, adj: str, looks: tuple[str, ...], sound: str):
        self.name, self.female, self.kind, self.looks, self.sound = name, female, kind, looks, sound
        self.intro = f"{_a(adj)} {kind} named {name}"
        self.he, self.him, self.his = ("she", "her", "her") if female else ("he", "him", "his")
        self.He, self.His = self.he.capitalize(), self.his.capitalize()

    @property
    def animal(self) -> bool:
        return self.kind not in ("girl", "boy")


class _Group:
    """Two or more characters acting together ("Lily and Tom", later "They")."""

    __slots__ = ("names",)

    def __init__(self, names: str):
        self.names = names


def _make_char(t: _Teller, animal: bool, avoid: str = "") -> _Char:
    """A new character, child or animal, whose name differs from ``avoid``."""
    pick, rand = t.pick, t.rng.random
    while True:
        female = rand() < 0.5
        if animal:
            kind, looks, sound = pick(_ANIMALS)
            name = pick(_PET_NAMES)
        else:
            name, kind, looks, sound = pick(_GIRLS if female else _BOYS), ("girl" if female else "boy"), \
                _CHILD_LOOKS, "laughed"
        if name != avoid:
            return _Char(name, female, kind, pick(_PERSON_ADJS), looks, sound)


class _Teller:
    """Collects a story's sentences and tracks who a pronoun may refer to.

    ``last`` is the character (or group) that the previous sentence was about; only that character
    may be referred to by a pronoun at the first mention in the next sentence.
    """

    __slots__ = ("rng", "density", "lines", "last", "mark", "pool", "p", "P")

    def __init__(self, rng: random.Random, density: float):
        self.rng = rng
        self.density = density              # < 1: a terse story, > 1: a wordy one
        self.lines: list[str] = []
        self.last: object = None
        self.mark = 0                       # where scenery sentences may be inserted
        self.pool: tuple[str, ...] = ()     # the scenery sentences that fit this story
        self.p = "mom" if rng.random() < 0.5 else "dad"
        self.P = self.p.capitalize()

    # --- random draws (``rng.random`` based: much cheaper than ``choice``/``sample``, bias negligible)
    def upto(self, n: int) -> int:
        """A random integer in [0, n)."""
        return int(self.rng.random() * n)

    def maybe(self, p: float) -> bool:
        """Whether to tell an optional part that a story of average density tells with probability p."""
        return self.rng.random() < p * self.density

    def pick(self, seq: Sequence[_T]) -> _T:
        """A random item of seq."""
        return seq[int(self.rng.random() * len(seq))]

    def some(self, seq: Sequence[_T], k: int) -> list[_T]:
        """k distinct random items of seq, in random order (a partial Fisher-Yates shuffle)."""
        items, rand, n = list(seq), self.rng.random, len(seq)
        for i in range(k):
            j = i + int(rand() * (n - i))
            items[i], items[j] = items[j], items[i]
        return items[:k]

    # --- references
    def _pron(self, c: object) -> bool:
        """Whether to use a pronoun for c here (only if the last sentence was about c)."""
        return self.last is c and self.rng.random() < _PRONOUN_RATE

    def S(self, c: _Char) -> str:
        """Sentence-initial reference to c: "She" or "Lily"."""
        return c.He if self._pron(c) else c.name

    def s(self, c: _Char) -> str:
        """Mid-sentence first reference to c as a subject: "she" or "Lily"."""
        return c.he if self._pron(c) else c.name

    def Poss(self, c: _Char) -> str:
        """Sentence-initial possessive: "Her" or "Lily's"."""
        return c.His if self._pron(c) else c.name + "'s"

    def obj(self, c: _Char) -> str:
        """Object reference, when it is the sentence's first mention of anyone: "her" or "Lily"."""
        return c.him if self._pron(c) else c.name

    def They(self, g: _Group) -> str:
        """Sentence-initial reference to a group: "They" or "Lily and Tom"."""
        return "They" if self._pron(g) else g.names

    # --- sentences
    def say(self, text: str, subj: object = None) -> None:
        """Add a sentence whose first mention is ``subj`` (None: nobody a pronoun may follow)."""
        self.lines.append(text)
        self.last = subj

    def scene(self, text: str) -> None:
        """Add a sentence that mentions nobody (the pronoun referent carries over)."""
        self.lines.append(text)

    def quote(self, c: _Char, words: str, mark: str = ".", verb: str = "said", more: str = "") -> None:
        """Dialogue spoken by c: '"We can share," said Lily.' or 'Lily said, "We can share."'."""
        tail = f' "{more}"' if more else ""
        r = self.rng.random()
        if r < 0.3 and not more:
            self.say(f'{c.name} {verb}, "{words}{mark}"', c)
            return
        q = words + ("," if mark == "." else mark)
        who = f"{c.he} {verb}" if self._pron(c) else f"{verb} {c.name}"
        self.say(f'"{q}" {who}.{tail}', c)

    def quote_other(self, who: str, words: str, mark: str = ".", verb: str = "said", more: str = "") -> None:
        """Dialogue spoken by an unnamed person ("Mom", "the old man")."""
        tail = f' "{more}"' if more else ""
        self.say(f'"{words}{"," if mark == "." else mark}" {verb} {who}.{tail}', None)

    def fill(self, template: str, c: _Char, about: bool | None = None) -> None:
        """Add a data-driven sentence about c. Templates use {S} (only at the start), {name}, {he},
        {him}, {his} (only after c's first mention), {P}/{p} (the parent). The sentence is about c if
        ``about`` says so, or by default if it starts with {S} or {name}; otherwise about nobody."""
        if about is None:
            about = template.startswith(("{S}", "{name}"))
        text = template.format(S=self.S(c) if about else "", name=c.name, he=c.he, him=c.him, his=c.his,
                               P=self.P, p=self.p)
        self.say(text, c if about else None)

    def set_mark(self, pool: tuple[str, ...], outdoor: bool = False) -> None:
        """Scenery sentences from ``pool`` (plus one about the fine weather, outdoors) may be inserted here."""
        self.mark, self.pool = len(self.lines), pool + (self.pick(_FAIR_WEATHER),) if outdoor else pool


# ---------------------------------------------------------------------------- shared story parts
def _intro(t: _Teller, h: _Char) -> None:
    """Introduce the hero and give a few traits (more in longer stories)."""
    pick, r = t.pick, t.rng.random()
    home = pick(_ANIMAL_HOMES if h.animal else _CHILD_HOMES)
    if r < 0.4:
        t.say(f"{pick(_OPENERS)}, there was {h.intro}.", h)
    elif r < 0.5:
        t.say(f"There once was {h.intro}.", h)
    elif r < 0.7:
        t.say(f"{pick(_OPENERS)}, {h.intro} lived in {home}.", h)
    else:
        t.say(f"{h.intro[0].upper()}{h.intro[1:]} lived in {home}.", h)
    for trait in t.some(range(6), int(t.rng.random() * (1 + 2 * t.density))):
        if trait == 0:
            t.say(f"{t.S(h)} had {pick(h.looks)}.", h)
        elif trait == 1:
            t.say(f"{t.S(h)} loved to {pick(_HOBBIES)}.", h)
        elif trait == 2:
            t.say(f"{t.S(h)} liked {pick(_FOODS)} more than anything.", h)
        elif trait == 3:
            t.say(f"When {t.s(h)} was happy, {h.he} {h.sound}.", h)
        elif trait == 4:
            t.say(f"Every morning, {t.s(h)} said hello to {pick(_GREETED)}.", h)
        else:
            t.say(f"{t.Poss(h)} favorite color was {pick(_COLORS[:12])}.", h)


def _meet_friend(t: _Teller, h: _Char, f: _Char) -> None:
    """Introduce the friend as the hero's friend."""
    r = t.rng.random()
    if r < 0.5:
        t.say(f"{t.S(h)} had a good friend named {f.name}.", h)
    else:
        t.say(f"{t.Poss(h)} best friend was {f.intro}.", h)


def _moral(t: _Teller, options: tuple[str, ...], h: _Char, **extra: str) -> None:
    """Maybe add one moral sentence (templates start with {name} or a phrase like 'From that day on, {s}')."""
    if t.maybe(0.75):
        text = t.pick(options).format(name=h.name, s=t.s(h), his=h.his, he=h.he, him=h.him, **extra)
        t.say(text, h)


# ---------------------------------------------------------------------------- arcs
# Every arc takes the teller, the hero and a friend (whom some arcs leave out) and tells one story.
def _arc_lost(t: _Teller, h: _Char, f: _Char) -> None:
    """A treasured object is lost at a place, searched for (with a friend or parent) and found."""
    pick, rng = t.pick, t.rng
    place = pick(_PLACES)
    noun, col = pick(_LOSABLE), pick(_COLORS)
    thing = f"{col} {noun}"
    _intro(t, h)
    r = rng.random()
    if r < 0.35:
        t.say(f"{t.S(h)} had {_a(thing)} that {h.he} loved very much.", h)
    elif r < 0.7:
        t.say(f"{t.Poss(h)} favorite thing in the whole world was {_a(thing)}.", h)
    else:
        t.say(f"{t.S(h)} got {_a(thing)} from {h.his} {pick(_RELATIVES)} for {h.his} birthday.", h)
    if t.maybe(0.5):
        t.say(f"{t.S(h)} took it everywhere {h.he} went.", h)
    if rng.random() < 0.5:
        t.say(f"{pick(_WHEN)}, {t.s(h)} took {h.his} {noun} to {place.name}.", h)
    else:
        t.say(f"{pick(_WHEN)}, {t.s(h)} and {h.his} {noun} went to {place.name}.", h)
    t.set_mark(place.sights, place.outdoor)
    a1, a2 = t.some(place.acts, 2)
    if t.maybe(0.8):
        t.say(f"{t.S(h)} {a1} and {a2}.", h)
    spots = t.some(place.hides, min(len(place.hides), int(2.5 + 1.5 * t.density)))
    r = rng.random()
    if r < 0.4:
        t.say(f"{t.S(h)} put the {noun} down {spots[0]} for a moment.", h)
        t.say(f"When {t.s(h)} came back, the {noun} was gone!", h)
        spots = spots[1:]
    elif r < 0.7:
        t.say(f"After a while, {t.s(h)} looked around, but {h.his} {noun} was not there.", h)
    else:
        t.say(f"Suddenly, {t.s(h)} saw that {h.his} {noun} was missing.", h)
    if t.maybe(0.4):
        t.say(f"{t.S(h)} felt {pick(('very sad', 'worried', 'upset', 'scared'))}.", h)
    if t.maybe(0.4):
        t.say(f"{t.Poss(h)} eyes filled with tears.", h)
    t.quote(h, f"Oh no! Where is my {noun}", "?", pick(("cried", "said", "asked")))

    with_friend = rng.random() < 0.55
    if with_friend:
        t.say(f"Just then, {f.intro if rng.random() < 0.5 else f.name} came by.", f)
        t.quote(f, "What is wrong", "?", "asked")
        t.quote(h, f"I lost my {noun}", ".", pick(("said", "sobbed")))
        if t.maybe(0.8):
            t.quote(f, pick(("Don't worry. I will help you look", "Let's look for it together",
                             "We will find it. Two pairs of eyes are better than one")), ".")
        helper = f.name
        g = _Group(f"{h.name} and {f.name}")
    else:
        t.say(f"{t.S(h)} ran to {h.his} {t.p}.", h)
        t.quote(h, f"{t.P}, I can't find my {noun}", "!", "cried")
        t.quote_other(t.P, pick(("Don't worry. Let's look for it together", "We will find it. Let's look carefully",
                                 "Think about where you had it last")), ".")
        helper = t.P
        g = _Group(f"{h.name} and {h.his} {t.p}")
    for spot in spots[:-1]:
        r = rng.random()
        if r < 0.4:
            t.say(f"{t.They(g)} looked {spot}, but it was not there.", g)
        elif r < 0.7:
            t.say(f"Next, {'they' if t.last is g else g.names} checked {spot}. They only found {pick(_JUNK)}.", g)
        else:
            t.say(f"{t.They(g)} searched {spot}, but the {noun} was not there either.", g)
    last_spot = spots[-1]
    r = rng.random()
    if r < 0.35:
        t.say(f"At last, {helper} looked {last_spot} and saw something {col}.", None)
        t.say(f"It was {h.name}'s {noun}!", h)
    elif r < 0.7:
        t.say(f"Then {t.s(h)} looked {last_spot}, and there it was!", h)
    else:
        thief = pick(_THIEVES)
        t.say(f"Then they heard a rustle {last_spot}.", None)
        t.say(f"A {thief} was playing with the {noun}!", None)
        t.say(f"When {h.name} came closer, the {thief} dropped the {noun} and ran away.", h)
    how = pick(("hugged {} tight", "held {} with joy", "picked up {} and smiled"))
    t.say(f"{t.S(h)} {how.format(h.his + ' ' + thing)}.", h)
    t.quote(h, f"Thank you, {helper}", "!", "said", pick(("You are the best!", "I am so happy!", "")))
    if with_friend and t.maybe(0.5):
        t.quote(f, "That is what friends are for", ".")
    _moral(t, ("From that day on, {s} always kept {his} {noun} close.",
               "{name} learned to take good care of {his} things.",
               "After that, {name} never left {his} {noun} behind again."), h, noun=noun)


def _arc_friend(t: _Teller, h: _Char, f: _Char) -> None:
    """A lonely hero meets someone new, says hello, and they play and become friends."""
    pick, rng = t.pick, t.rng
    place = pick(_PUBLIC)
    _intro(t, h)
    t.say(f"{pick(_WHEN)}, {t.s(h)} went to {place.name}.", h)
    t.set_mark(place.sights, place.outdoor)
    r = rng.random()
    if r < 0.35:
        t.say(f"{t.S(h)} wanted to play, but {h.he} did not have anyone to play with.", h)
    elif r < 0.7:
        t.say(f"Everyone else was busy, and {h.name} felt lonely.", h)
    else:
        t.say(f"{t.S(h)} sat alone {pick(place.hides)} and felt a little sad.", h)
    named = rng.random() < 0.5
    desc = f.intro if named else _a(f"{pick(_PERSON_ADJS)} {f.kind}")
    alone = "itself" if f.animal else f.him + "self"
    doing = pick(("sitting all alone", "looking at the sky", f"playing by {alone}"))
    t.say(f"Then {t.s(h)} saw {desc} {doing}.", h)
    if named:
        t.say(f"{f.name} looked {pick(('lonely', 'shy', 'a little sad'))} too.", f)
    if t.maybe(0.8):
        t.say(f"{t.S(h)} wanted to say hello, but {h.he} felt shy.", h)
    if t.maybe(0.5):
        t.say(f"{t.S(h)} took a deep breath and walked over.", h)
    t.quote(h, f"Hi, I am {h.name}. Do you want to play with me", "?", "asked")
    if named:
        t.quote(f, pick(("Yes, please", "Yes! I would love to", "Oh yes")), "!", "said")
    else:
        t.quote_other(f"the {f.kind}", f"Yes, please! My name is {f.name}", "!", "said",
                      pick(("I am new here.", "I just moved here.", "")))
    g = _Group(f"{h.name} and {f.name}")
    a1, a2 = t.some(place.acts, 2)
    t.say(f"{g.names} {a1}.", g)
    game1, game2 = t.some(_GAMES, 2)
    t.say(f"Then {'they' if rng.random() < 0.6 else g.names} played {game1}.", g)
    if t.maybe(0.4):
        t.say(f"After that, they played {game2}, and {h.name} laughed so hard that {h.his} tummy hurt.", g)
    if t.maybe(0.6):
        t.say(f"{f.name} showed {h.name} how to {pick(_SKILLS)}.", f)
        t.quote(h, "That is so cool", "!", "said")
    if t.maybe(0.8):
        t.say(f"Later, {'they' if rng.random() < 0.6 else g.names} {a2} and shared {pick(_FOODS)}.", g)
    if t.maybe(0.6):
        t.say(f"When it was time to go home, {h.name} felt sad.", h)
        t.quote(f, "Can we play again tomorrow", "?", "asked")
        t.quote(h, "Yes! I would like that very much", "!", "said")
    r = rng.random()
    if r < 0.5:
        t.say(f"{h.name} and {f.name} became best friends.", g)
    else:
        t.say(f"From that day on, {h.name} and {f.name} played together every day.", g)
    _moral(t, ("{name} learned that a kind hello can be the start of a great friendship.",
               "{name} was glad {he} had been brave enough to say hello."), h)


# (thing feared, setup, why it is scary, steps towards it, success, how it felt, place for scenery)
_FEARS = (
    ("the big slide", "One day, {P} took {name} to the playground.", "The slide was so tall, and it went so fast.",
     ("climbed the ladder one step at a time", "sat at the very top and held on tight"),
     "let go and slid all the way down", "Whoosh! It felt like flying.", "the playground"),
    ("the dark", "One night, {P} turned off the light in {name}'s room.",
     "The shadows on the wall looked like monsters.",
     ("pulled the blanket up to {his} chin", "looked at the shadows very carefully"),
     "saw that the monster was only a coat hanging on the door", "There was nothing to be afraid of.",
     "the bedroom"),
    ("the water", "One hot day, {P} took {name} to the lake.", "The water looked deep and cold.",
     ("dipped one toe in the water", "walked in up to {his} knees"),
     "kicked {his} legs and floated on {his} back", "The water felt cool and nice.", "the lake"),
    ("thunder", "One evening, a big storm came to {name}'s town.", "The thunder was so loud that the windows shook.",
     ("counted slowly between the flashes", "listened to the rain tapping on the roof"),
     "noticed that the thunder was getting softer and farther away",
     "Soon the storm sounded like a drum far away.", "the living room"),
    ("the big dog next door", "One day, {name}'s ball rolled into the yard next door.",
     "The dog was very big and had a loud bark.", ("walked slowly to the fence", "held out {his} hand"),
     "patted the dog on the head", "The dog wagged its tail and licked {his} hand.", "the backyard"),
    ("climbing trees", "One day, {name}'s friends were climbing the old oak tree in the park.",
     "The branches looked so high up.", ("put {his} foot on the lowest branch", "reached for the next branch"),
     "climbed up and sat on a big branch", "From up there, {he} could see the whole park.", "the park"),
    ("going to a new school", "One morning, {name} had to go to a new school.", "Everything there was new and strange.",
     ("held {his} {p}'s hand at the door", "walked into the bright classroom"),
     "said hello to the boy at the next desk", "By lunchtime, {he} had a new friend.", "school"),
    ("riding a bike without training wheels", "One day, {P} took the training wheels off {name}'s bike.",
     "What if {he} fell over?", ("sat on the seat and held the handles", "pushed the pedals slowly"),
     "rode all the way down the path by {him}self", "The wind blew in {his} hair.", "the park"),
    ("going to the doctor", "One morning, {name} had to go to the doctor for a checkup.",
     "The doctor's office smelled funny, and the tools looked strange.",
     ("sat on the big chair", "opened {his} mouth and said ah"),
     "sat very still while the doctor listened to {his} heart", "The doctor gave {him} a shiny sticker.",
     "the doctor's office"),
    ("singing in front of people", "One week, {name}'s class was putting on a show.",
     "What if everyone laughed?", ("stood on the stage", "looked out at all the faces"),
     "sang the whole song in a clear, strong voice", "Everyone clapped and cheered.", "school"),
    ("the bees in the garden", "One day, {P} asked {name} to help pick flowers in the garden.",
     "The bees buzzed so loudly.", ("walked slowly along the path", "stood very still while a bee flew by"),
     "picked a whole bunch of flowers", "The bees were too busy to care about {him}.", "the garden"),
    ("the big waves", "One summer day, {P} took {name} to the beach.", "The waves crashed and roared.",
     ("stood where the water was only a little wet", "let a small wave wash over {his} feet"),
     "jumped over a wave and laughed", "The sea felt cool and bubbly.", "the beach"),
)
_COURAGE = _split("You are braver than you think|I will be right here with you|Just take one small step|"
                  "Everyone feels scared sometimes|Take a deep breath. You can do it|Let's do it together|"
                  "Being brave does not mean you are not scared|I believe in you|Go slowly. There is no hurry")


def _arc_fear(t: _Teller, h: _Char, f: _Char) -> None:
    """The hero is afraid of something, is encouraged, tries step by step, and succeeds."""
    pick, rng = t.pick, t.rng
    thing, setup, why, steps, success, felt, place = pick(_FEARS)
    _intro(t, h)
    if rng.random() < 0.5:
        t.say(f"{t.S(h)} was afraid of {thing}.", h)
    else:
        t.say(f"But there was one thing {h.name} was scared of: {thing}.", h)
    t.fill(setup, h)
    t.set_mark(_PLACE[place].sights)
    t.fill(why, h)
    r = rng.random()
    if r < 0.4:
        t.say(f"{t.Poss(h)} knees began to shake.", h)
    elif r < 0.7:
        t.say(f"{t.Poss(h)} heart went thump, thump, thump.", h)
    else:
        t.say(f"{t.S(h)} wanted to run away and hide.", h)
    t.quote(h, *pick((("I can't do it", "."), ("I am too scared", "."), ("What if something bad happens", "?"),
                      ("Do I have to", "?"))), pick(("whispered", "said")))
    a, b = t.some(_COURAGE, 2)
    if rng.random() < 0.5:
        t.quote_other(t.P, a, ".", "said", b + ".")
    else:
        t.say(f"{f.intro[0].upper()}{f.intro[1:]} was there too.", f)
        t.quote(f, a, ".", "said", b + ".")
    if t.maybe(0.8):
        t.say(f"{t.S(h)} took a deep breath.", h)
    for step in steps:
        t.fill("{S} " + step + ".", h)
    t.fill("Then {name} " + success + "!", h, about=True)
    t.fill(felt, h)
    t.quote(h, pick(("I did it", "I am not scared anymore", "That was not so bad")), "!", "shouted")
    if t.maybe(0.8):
        t.say(f"{t.S(h)} felt so proud.", h)
    if t.maybe(0.5):
        t.say(f"{t.P} gave {t.obj(h)} a big hug.", None)
    _moral(t, ("From that day on, {name} was not afraid of {thing} anymore.",
               "{name} learned that being brave means trying even when you feel scared."), h, thing=thing)


# toys that can be shared: (noun, how you use it, past tense)
_SHARE_TOYS = (("ball", "throw it", "threw the ball"), ("kite", "fly it", "flew the kite"),
               ("scooter", "ride it", "rode the scooter"), ("drum", "play it", "played the drum"),
               ("toy car", "race it", "raced the toy car"), ("jump rope", "jump with it", "jumped rope"),
               ("robot", "make it walk", "made the robot walk"), ("yo-yo", "spin it", "spun the yo-yo"),
               ("puppet", "make it talk", "made the puppet talk"), ("bubble wand", "blow bubbles",
               "blew big bubbles"), ("toy train", "drive it", "drove the toy train"),
               ("tambourine", "shake it", "shook the tambourine"), ("wagon", "pull it", "pulled the wagon"),
               ("paintbrush", "paint with it", "painted a picture"), ("pinwheel", "spin it", "spun the pinwheel"),
               ("toy boat", "sail it", "sailed the toy boat"))


def _arc_share(t: _Teller, h: _Char, f: _Char) -> None:
    """Two friends fight over a toy, someone gets hurt or sad, they apologise and take turns."""
    pick, rng = t.pick, t.rng
    place = pick(_PLACES)
    noun, use, used = pick(_SHARE_TOYS)
    _intro(t, h)
    _meet_friend(t, h, f)
    g = _Group(f"{h.name} and {f.name}")
    t.say(f"{pick(_WHEN)}, {h.name} and {f.name} were playing {place.at}.", g)
    t.set_mark(place.sights, place.outdoor)
    if rng.random() < 0.5:
        t.say(f"{f.name} had a new {pick(_COLORS)} {noun}.", f)
        t.say(f"{t.S(h)} wanted to {use} too.", h)
    else:
        t.say(f"{t.They(g)} found {_a(pick(_COLORS) + ' ' + noun)}.", g)
        t.say(f"{h.name} wanted to {use} first, and so did {f.name}.", h)
    t.quote(h, "Give it to me! It is my turn", "!", "shouted")
    t.quote(f, "No! I had it first", "!", "shouted")
    r = rng.random()
    if r < 0.4:
        t.say(f"They both pulled and pulled, and {f.name} fell down.", None)
        t.say(f"{f.name} started to cry.", f)
    elif r < 0.7:
        t.say(f"{h.name} grabbed the {noun} and ran away.", h)
        t.say(f"{f.name} sat down and cried.", f)
    else:
        t.say("They shouted so loudly that the birds flew away.", None)
        t.say(f"{f.name} stomped off with a frown.", f)
    if t.maybe(0.8):
        t.say(f"{h.name} looked at {f.name}'s sad face and felt bad inside.", h)
    if rng.random() < 0.5:
        t.quote_other(t.P, "What is going on here", "?", "asked")
        t.quote_other(t.P, pick(("Toys are more fun when we share them", "How about taking turns",
                                 "Friends should share")), ".")
    else:
        t.say(f"Then {t.s(h)} had an idea.", h)
    t.quote(h, f"I am sorry, {f.name}", ".", "said", pick(("We can take turns.", "Let's share.",
                                                           "You can go first.")))
    t.quote(f, pick(("I am sorry too", "Thank you. I am sorry I yelled", "Okay, let's share")), ".")
    t.say(f"First, {f.name} {used}.", f)
    t.say(f"Then {h.name} had a turn.", h)
    if t.maybe(0.8):
        t.say(f"{t.They(g)} laughed and played until the sun went down.", g)
    if t.maybe(0.5):
        t.scene("Playing together was much more fun than fighting.")
    _moral(t, ("{name} learned that sharing makes playing more fun.",
               "From then on, {s} always shared with {his} friends."), h)


# (who needs help, the trouble, what the hero does, how it ends; place for scenery). Templates: see _Teller.fill.
_HELP = (
    ("the park", ("{S} saw a little bird on the ground.", "It had a hurt wing and could not fly."),
     ("{S} gently picked it up and put it in a box with a soft cloth.", "{S} gave it water and some seeds.",
      "Every day, {name} took care of the bird."),
     ("Soon the wing was better.", "One morning, the bird flapped its wings and flew up into the sky.",
      "It sang a happy song, as if to say thank you.")),
    ("the backyard", ("{S} heard a small meow.", "A little kitten was stuck high up in a tree!"),
     ("{S} ran to get {his} {p}.", "{P} brought a ladder and climbed up slowly.",
      "Soon the kitten was safe in {name}'s arms."),
     ("It purred and rubbed its soft head on {his} hand.", "A lady came running down the street.",
      "The lady hugged the kitten and thanked {name} again and again.")),
    ("the market", ("{S} saw an old man carrying a big bag of oranges.",
                    "Suddenly, the bag tore, and the oranges rolled everywhere."),
     ("{S} ran to help.", "{S} picked up the oranges one by one.", "{name} even found one under a cart."),
     ("The old man smiled a big smile.", "The old man gave {name} the biggest orange as a thank you.")),
    ("the park", ("{S} found a little puppy sitting alone under a bench.", "The puppy looked lost and scared."),
     ("{S} knelt down and let the puppy sniff {his} hand.",
      "{S} and {his} {p} walked up and down the street, asking everyone about the puppy."),
     ("At last, a boy came running and calling.", "The puppy barked and jumped into the boy's arms.",
      "The boy thanked {name} with a big smile.")),
    ("the pond", ("{S} saw a tiny duckling all alone in the reeds.", "It was peeping for its mother."),
     ("{S} looked all around the pond.", "{S} spotted the mother duck on the other side.",
      "{S} carefully carried the duckling along the shore."),
     ("The duckling splashed into the water and swam to its mother.",
      "The mother duck quacked loudly, as if to say thank you.")),
    ("Grandma's house", ("{S} had come to visit Grandma.", "Grandma was sick in bed and looked very tired."),
     ("{S} picked a bunch of flowers for Grandma.", "{S} and {his} {p} made a pot of warm soup.",
      "{name} sat by the bed and read Grandma a story."),
     ("The next day, Grandma felt much better.", "Grandma said that love is the best medicine.")),
    ("the river", ("{S} saw a little turtle trying to cross the busy path.", "People almost stepped on it."),
     ("{S} carefully picked up the turtle.", "{S} carried it all the way to the river."),
     ("The turtle slid into the water and swam away.", "It poked its head up once, as if to wave goodbye.")),
    ("the kitchen", ("{S} saw that the house was very messy.", "{P} looked very tired after a long day."),
     ("{S} decided to help without being asked.", "{S} picked up all the toys and put them away.",
      "{S} folded the towels and set the table for dinner."),
     ("{P} saw the clean house and smiled a big smile.", "That evening, they ate dinner together.")),
)


def _arc_help(t: _Teller, h: _Char, f: _Char) -> None:
    """The hero finds someone in trouble (an animal, an old man, Grandma, ...) and helps."""
    pick, rng = t.pick, t.rng
    place, trouble, actions, outcome = pick(_HELP)
    _intro(t, h)
    t.say(f"{pick(_WHEN)}, {t.s(h)} was {_PLACE[place].at}.", h)
    t.set_mark(_PLACE[place].sights)
    for line in trouble:
        t.fill(line, h)
    t.quote(h, pick(("I have to help", "Oh no! I must do something", "Don't worry, I will help you")), "!",
            pick(("said", "whispered", "cried")))
    for line in actions:
        t.fill(line, h)
    for line in outcome:
        t.fill(line, h)
    r = rng.random()
    if r < 0.5:
        t.say(f"{t.S(h)} felt warm and happy inside.", h)
    else:
        t.say(f"{t.S(h)} was proud that {h.he} had helped.", h)
    _moral(t, ("{name} learned that helping others makes everyone happy.",
               "From that day on, {s} always looked for ways to help.",
               "{name} knew that even a small helper can do a big kindness."), h)


# (destination, how to get there, outdoors?, sights there, the treat, the souvenir)
_TRIPS = (
    ("the zoo", "in the car", True,
     _split("a tall giraffe eating leaves|two monkeys swinging on a rope|a sleepy lion|"
            "penguins diving into the water|a huge gray elephant|a colorful parrot"),
     "an ice cream cone", "a toy monkey"),
    ("a farm", "in the car", True,
     _split("cows eating grass|a pink pig with piglets|a rooster on the fence|baby chicks|a brown horse|"
            "fluffy sheep"),
     "a glass of fresh milk", "a jar of honey"),
    ("the seaside", "on the train", True,
     _split("big waves|crabs in the tide pools|a sailboat far away|a starfish on a rock|a lighthouse"),
     "a cold lemonade", "a pretty shell"),
    ("the aquarium", "on the bus", False,
     _split("a shark gliding by|bright orange fish|a giant octopus|jellyfish that glowed|a sea turtle"),
     "a pretzel", "a toy octopus"),
    ("the mountains", "in the car", True,
     _split("a roaring waterfall|a deer in the trees|snow on the high peaks|an eagle flying high|"
            "a clear blue lake"),
     "hot soup", "a walking stick"),
    ("the museum", "on the train", False,
     _split("a giant dinosaur skeleton|a real space rocket|old golden coins|a mummy in a glass box|"
            "a huge map of the stars"),
     "a cookie", "a toy dinosaur"),
    ("the fair", "on the bus", True,
     _split("a big wheel full of lights|a merry-go-round with painted horses|a man juggling balls|"
            "a prize pumpkin|a clown with big shoes"),
     "cotton candy", "a striped balloon"),
    ("a little island", "on a boat", True,
     _split("dolphins jumping|a red lighthouse|palm trees|a sandy cove|a rock full of seals"),
     "a coconut drink", "a bag of shells"),
    ("the woods to go camping", "in the car", True,
     _split("a clear stream|a family of deer|a sky full of stars|a big old owl|a rabbit hopping by"),
     "roasted marshmallows", "a pine cone"),
)
_VIEWS = _split("green fields|tall trees|cows|a river|little houses|big trucks|windmills|a red barn|horses|"
                "a long bridge|sheep on a hill|a busy town|a flock of birds|a lake that shone like glass|"
                "a castle on a hill|fields of yellow flowers|goats on a rocky hill|a church with a tall tower")


def _arc_trip(t: _Teller, h: _Char, f: _Char) -> None:
    """A family trip: the ride, the sights, a small mishap, a souvenir, and a dream on the way home."""
    pick, rng = t.pick, t.rng
    dest, ride, outdoor, sights, treat, souvenir = pick(_TRIPS)
    _intro(t, h)
    if rng.random() < 0.5:
        t.say(f"{pick(_WHEN)}, {t.s(h)} and {h.his} family went on a trip to {dest}.", h)
    else:
        t.quote_other(t.P, f"Pack your bag! Today we are going to {dest}", "!", "said")
        t.say(f"{t.S(h)} was so excited that {h.he} jumped up and down.", h)
    t.say(f"They rode {ride} for a long time.", None)
    v1, v2 = t.some(_VIEWS, 2)
    if t.maybe(0.8):
        t.say(f"{h.name} looked {'over the side' if 'boat' in ride else 'out the window'} and saw {v1} and {v2}.", h)
    if t.maybe(0.5):
        t.quote(h, "Are we there yet", "?", "asked")
        t.quote_other(t.P, "Almost", ".", "said")
    t.say("At last, they arrived.", None)
    t.set_mark(_FAIR_WEATHER)
    s1, s2, s3 = t.some(sights, 3)
    t.say(f"First, they saw {s1}.", None)
    t.say(f"Then they saw {s2} and {s3}.", None)
    t.say(f"{h.name}'s favorite part was {s1}.", h)
    r = rng.random()
    if r < 0.3 or (r >= 0.8 and not outdoor):
        t.say(f"Suddenly, {t.s(h)} could not see {h.his} family anywhere!", h)
        t.say(f"{t.S(h)} felt scared, but {h.he} remembered what to do.", h)
        t.say(f"{t.S(h)} stood still and asked a kind lady for help.", h)
        t.say(f"Soon, {h.his} {t.p} came running.", None)
        t.quote_other(t.P, "I am so glad you are safe", "!", "said")
    elif r < 0.6:
        t.say(f"{t.P} bought {t.obj(h)} {treat}.", None)
        t.say(f"But {h.name} tripped and dropped it on the ground!", h)
        t.say(f"{t.S(h)} felt like crying.", h)
        t.say(f"{t.P} laughed and bought {h.name} another one.", None)
    elif r < 0.8:
        t.say(f"After a while, {h.name}'s legs were tired.", h)
        t.say(f"{t.P} carried {t.obj(h)} on {'his' if t.p == 'dad' else 'her'} shoulders.", None)
        t.say(f"From up high, {h.name} could see everything.", h)
    elif outdoor:
        t.scene("Then it started to rain.")
        t.say("Everyone ran under a big tree and waited.", None)
        t.scene("Soon the sun came out again, and a rainbow filled the sky.")
    if t.maybe(0.8):
        t.say(f"Before they left, {h.name} got {souvenir}.", h)
    t.say(f"On the way home, {t.s(h)} fell asleep {ride}.", h)
    t.say(f"{t.S(h)} dreamed about {s1}.", h)
    if rng.random() < 0.5:
        t.scene("It was the best trip ever.")
    else:
        t.quote(h, "Can we go back soon", "?", "asked")


# (bad weather: what happens, what the window shows, how it ends)
_BAD_WEATHER = (
    ("rainy", ("But then dark clouds covered the sky.", "Soon, big drops of rain began to fall."),
     _split("Pitter, patter went the rain on the window.|Puddles grew on the path.|The trees dripped with rain."),
     "Later, the rain stopped, and a rainbow appeared in the sky."),
    ("stormy", ("But then the wind began to howl.", "Thunder boomed, and lightning flashed across the sky."),
     _split("Rain beat on the roof.|The windows rattled.|The sky was dark and gray."),
     "By evening, the storm had passed, and the stars came out."),
    ("windy", ("But then a strong wind came.", "The trees bent and swayed, and branches flew through the air."),
     _split("Leaves whirled past the window.|The gate banged open and shut.|The wind whistled down the chimney."),
     "Later, the wind calmed down, and everything was still."),
    ("snowy", ("But then a snowstorm came.", "Snow fell so thick that nobody could see the street."),
     _split("Snow piled up against the door.|Everything outside was white.|Icicles hung from the roof."),
     "The next morning, the snow stopped, and the whole world sparkled."),
)
# (what the parent suggests, what they do)
_INDOOR = (
    ("build a blanket fort", ("They put a big blanket over two chairs.",
                              "{S} filled the fort with pillows and a flashlight.")),
    ("bake cookies", ("They mixed flour, butter, sugar, and eggs in a big bowl.",
                      "{S} stirred the dough and added chocolate chips.", "Soon the house smelled sweet and warm.")),
    ("paint pictures", ("They spread old papers on the table.", "{S} painted a big yellow sun and a green tree.")),
    ("make a puppet show", ("They made puppets out of old socks and buttons.",
                            "{S} made a dragon puppet that could roar.")),
    ("have an indoor picnic", ("They spread a blanket on the living room floor.",
                               "{S} helped make sandwiches and lemonade.")),
    ("play a board game", ("They sat around the table and rolled the dice.", "{S} won the game twice!")),
    ("have a dance party", ("They turned on happy music.", "{S} twirled and hopped and spun around.")),
    ("read stories together", ("They cuddled up on the sofa with a big pile of books.",
                               "{S} read the funny parts out loud.")),
)


def _arc_weather(t: _Teller, h: _Char, f: _Char) -> None:
    """Bad weather spoils a plan to go out; the parent suggests an indoor game; the weather clears."""
    pick = t.pick
    place = pick(_OUTDOOR)
    adj, turn, window, clears = pick(_BAD_WEATHER)
    idea, steps = pick(_INDOOR)
    _intro(t, h)
    act = pick(place.acts)
    t.say(f"{pick(_WHEN)}, {t.s(h)} wanted to go to {place.name} and play outside.", h)
    if t.maybe(0.8):
        t.say(f"{t.S(h)} was so excited that {h.he} put on {h.his} shoes and waited by the door.", h)
    for line in turn:
        t.scene(line)
    t.set_mark(window)
    t.quote(h, f"Now we can't go to {place.name}", "!", pick(("cried", "said", "sighed")))
    if t.maybe(0.8):
        t.say(f"{t.S(h)} pressed {h.his} nose to the window and felt sad.", h)
    t.quote_other(t.P, f"I have an idea. Let's {idea}", "!", "said")
    for line in steps:
        t.fill(line, h)
    t.say(f"{t.S(h)} laughed and forgot all about the weather.", h)
    t.scene(clears)
    if t.maybe(0.5):
        t.say(f"The next day, {h.name} finally went to {place.name} and {act}.", h)
    _moral(t, (f"{{name}} learned that even a {adj} day can be a happy day.",
               "{name} learned that there is always something fun to do."), h)


# (toy, what happened to it, what fixes it, how it is fixed, where it happened)
_BREAKABLE = (
    ("toy car", "The wheel came off the toy car.", "a little glue", "glued the wheel back on", "the living room"),
    ("teddy bear", "The teddy bear's arm tore at the seam.", "a needle and thread",
     "sewed the arm back on with tiny stitches",
     "the bedroom"),
    ("doll", "The doll's leg popped off.", "a tube of glue", "glued the leg back on", "the bedroom"),
    ("kite", "The kite string snapped, and the kite got stuck in a bush.", "a long new string",
     "tied a new string to the kite", "the hill"),
    ("robot", "One of the robot's arms fell off.", "a tiny screwdriver", "screwed the arm back on", "the living room"),
    ("wagon", "A wheel fell off the wagon.", "a hammer and a nail", "fixed the wheel back on", "the backyard"),
    ("storybook", "A page ripped out of the storybook.", "some clear tape", "taped the page back in", "the library"),
    ("toy boat", "The sail of the toy boat tore.", "an old handkerchief", "made a new sail for the boat", "the pond"),
    ("toy plane", "One wing broke off the toy plane.", "a little glue", "glued the wing back on", "the park"),
    ("puppet", "One of the puppet's button eyes came off.", "a needle and thread", "sewed on a new button eye",
     "the living room"),
    ("necklace", "The necklace string broke, and the beads rolled everywhere.", "a new string",
     "put the beads back on a new string", "the bedroom"),
    ("bike", "The chain came off the bike.", "an old rag", "put the chain back on", "the park"),
    ("music box", "The music box stopped playing.", "a tiny screwdriver", "fixed the little spring inside",
     "the attic"),
    ("sandcastle bucket", "The handle of the sandcastle bucket snapped.", "a piece of strong rope",
     "tied a new rope handle on", "the beach"),
)
_FIXERS = _split("Dad|Mom|Grandpa|Grandma")


def _arc_broken(t: _Teller, h: _Char, f: _Char) -> None:
    """A favourite toy breaks; a grown-up mends it with the right tool; the hero is gentler after."""
    pick, rng = t.pick, t.rng
    noun, broke, tool, fix, place = pick(_BREAKABLE)
    col = pick(_COLORS)
    _intro(t, h)
    if rng.random() < 0.5:
        t.say(f"{t.S(h)} had {_a(col + ' ' + noun)} that {h.he} loved.", h)
    else:
        t.say(f"{t.Poss(h)} favorite thing was {_a(col + ' ' + noun)}.", h)
    if t.maybe(0.8):
        t.say(f"{t.S(h)} played with it every day.", h)
    t.say(f"{pick(_WHEN)}, {t.s(h)} was playing with the {noun} {_PLACE[place].at}.", h)
    t.set_mark(_PLACE[place].sights)
    r = rng.random()
    if r < 0.4:
        t.say(f"{t.S(h)} played too roughly, and the {noun} hit the ground hard.", h)
    elif r < 0.7:
        t.say(f"{t.S(h)} tripped over a {pick(('shoe', 'rock', 'toy block', 'root'))}, and the {noun} went flying.", h)
    else:
        t.say(f"{t.Poss(h)} little brother stepped on it by accident.", h)
    t.scene(pick(("Crack!", "Snap!", "Oh no!")))
    t.scene(broke)
    if t.maybe(0.8):
        t.say(f"{t.S(h)} started to cry.", h)
    t.quote(h, f"My {noun} is broken", "!", pick(("sobbed", "cried", "said")))
    fixer = pick(_FIXERS)
    t.say(f"{t.S(h)} took the {noun} to {fixer}.", h)
    t.quote(h, "Can you fix it", "?", "asked")
    t.quote_other(fixer, pick(("Let me see. I think we can fix it together", "Don't cry. Let's see what we can do",
                               "Broken things can often be mended")), ".")
    t.say(f"{fixer} got {tool}.", None)
    t.say(f"{h.name} held the {noun} very still while {fixer} {fix}.", h)
    if "glue" in tool:
        t.say("They waited for the glue to dry.", None)
    t.scene(f"Soon the {noun} was as good as new!")
    t.quote(h, f"Thank you, {fixer}", "!", "said", pick(("You fixed it!", "You are the best!", "")))
    _moral(t, ("From then on, {name} played with {his} {noun} more gently.",
               "{name} learned that broken things can often be fixed with a little help and patience."),
           h, noun=noun)


# (what to make, how, what goes wrong, how it is saved)
_GIFTS = (
    ("a birthday card", ("{S} folded a big piece of paper in half.",
                         "{S} drew a sun, a heart, and a smiling face on the front."),
     "Then the dog ran across the card with muddy paws.", "{S} laughed and turned the paw prints into little flowers."),
    ("a cake", ("{S} and {his} {p} mixed flour, eggs, and sugar in a big bowl.", "They put the cake in the oven."),
     "But when they took it out, the cake was flat and lumpy.", "{S} covered it with pink frosting and sprinkles."),
    ("a painting", ("{S} painted a big blue sky and a field of flowers.", "{S} added a yellow sun in the corner."),
     "Then {name} knocked over a cup of water, and it spilled on the painting.",
     "The colors ran together and made a soft, pretty sky."),
    ("a bunch of flowers", ("{S} picked daisies, tulips, and buttercups from the garden.",
                            "{S} put them all together in a jar."),
     "But the wind blew some of the petals away.",
     "{S} tied the flowers with a bright ribbon, and they looked lovely."),
    ("a bead necklace", ("{S} found a box of colorful beads.", "{S} put the beads on a string one by one."),
     "Then the string slipped, and the beads rolled all over the floor.",
     "{S} picked up every bead and started again, more carefully this time."),
    ("a song", ("{S} thought of a happy tune.", "{S} practiced it over and over."),
     "But when it was time to sing, {name} forgot the words.", "{S} made up new words on the spot, and they rhymed!"),
)


def _arc_gift(t: _Teller, h: _Char, f: _Char) -> None:
    """The hero makes a birthday present, something goes wrong, the hero saves it, it is loved."""
    pick, rng = t.pick, t.rng
    gift, steps, oops, save = pick(_GIFTS)
    _intro(t, h)
    to_friend = rng.random() < 0.4
    if to_friend:
        _meet_friend(t, h, f)
        owner, thank = f"{f.name}'s", None
    else:
        recipient = pick((t.P, "Grandma", "Grandpa"))
        owner, thank = f"{recipient}'s", recipient
    t.say(f"{pick(_WHEN)}, {h.name} remembered that it was {owner} birthday.", h)
    t.say(f"{t.S(h)} wanted to make {gift} as a present.", h)
    t.set_mark(_PLACE["the kitchen"].sights)
    for line in steps:
        t.fill(line, h)
    t.fill(oops, h)
    t.quote(h, *pick((("Oh no! It is ruined", "!"), ("Now it is all wrong", "!"), ("What will I do now", "?"))),
            pick(("cried", "said")))
    if t.maybe(0.8):
        t.say(f"{t.S(h)} almost gave up.", h)
    t.say(f"Then {t.s(h)} had an idea.", h)
    t.fill(save, h)
    if to_friend:
        t.say(f"When {h.name} gave {f.name} the present, {f.name}'s eyes lit up.", h)
        t.quote(f, "This is the best present ever", "!", "said", f"Thank you, {h.name}!")
    else:
        t.say(f"When {h.name} gave the present to {thank}, {thank} smiled from ear to ear.", h)
        t.quote_other(thank, "This is the best present ever", "!", "said", f"Thank you, {h.name}!")
    if t.maybe(0.5):
        t.scene("Everyone sang and ate cake together.")
    _moral(t, ("{name} learned that a gift made with love is the best kind of gift.",
               "{name} learned that it does not have to be perfect to be special."), h)


# (what is planted, its seed, what grows, what is picked)
_PLANTS = (
    ("sunflower", "a sunflower seed", "a tall sunflower with a big yellow face", "seeds"),
    ("tomato", "some tomato seeds", "a bushy plant covered in red tomatoes", "tomatoes"),
    ("pumpkin", "a pumpkin seed", "a long vine with a big orange pumpkin", "pumpkin"),
    ("bean", "a bean", "a bean plant that climbed all the way up a stick", "beans"),
    ("carrot", "some carrot seeds", "a row of feathery green tops with orange carrots underneath", "carrots"),
    ("strawberry", "some strawberry seeds", "a patch of plants full of sweet red berries", "strawberries"),
    ("pea", "some peas", "a plant with long green pods", "peas"),
)


# (a pest or trouble in the garden, what the hero does about it, how that works out)
_GARDEN_TROUBLES = (
    ("One day, some hungry birds came to peck at the soil.",
     "{S} made a funny scarecrow out of old clothes and a straw hat.",
     "The birds took one look at the scarecrow and flew away."),
    ("One night, a rabbit nibbled on the little leaves.",
     "{S} and {his} {p} built a small fence out of sticks and string.",
     "The rabbit could not get in anymore."),
    ("Then came many hot, dry days, and the leaves began to droop.",
     "{S} carried the watering can to the garden every morning and every evening.",
     "Soon the leaves stood up straight again."),
    ("Weeds began to grow all around the little plant.", "{S} knelt down and pulled out every weed, one by one.",
     "Now the little plant had plenty of room to grow."),
    ("A slimy snail crawled up the stem.", "{S} gently picked up the snail and carried it to the far end of the yard.",
     "The snail found some old leaves to munch on instead."),
)


def _arc_garden(t: _Teller, h: _Char, f: _Char) -> None:
    """The hero plants a seed, waits impatiently, looks after the plant, and shares the harvest."""
    pick, rng = t.pick, t.rng
    plant, seed, grown, crop = pick(_PLANTS)
    seeds = "seeds" if seed.startswith("some") else "seed"
    _intro(t, h)
    r = rng.random()
    if r < 0.4:
        t.say(f"{pick(('One spring day', 'One warm morning', 'When spring came'))}, {t.P} gave {h.name} {seed}.", h)
    elif r < 0.7:
        t.say(f"{pick(('One spring day', 'One warm morning', 'When spring came'))}, {t.s(h)} found {seed} in a "
              f"little paper bag.", h)
    else:
        giver = pick(("grandpa", "grandma", "neighbor", "teacher"))
        t.say(f"{pick(_WHEN)}, {h.name}'s {giver} gave {h.him} {seed}.", h)
    if rng.random() < 0.5:
        t.say(f"{t.S(h)} dug a small hole in the garden and planted the {plant} {seeds}.", h)
    else:
        t.say(f"{t.S(h)} filled a pot with soft dirt and pushed the {plant} {seeds} down with one finger.", h)
    t.say(f"{t.S(h)} gave {'them' if seeds == 'seeds' else 'it'} some water and whispered, \"Grow, little "
          f"{seeds}!\"", h)
    t.set_mark(_PLACE["the garden"].sights)
    t.say(f"{pick(('The next morning', 'The very next day', 'Early the next day'))}, {t.s(h)} ran outside to look.", h)
    t.scene(pick(("But there was nothing there, only brown dirt.", "But nothing had happened at all.",
                  f"But all {h.name} could see was dirt.")))
    t.quote(h, pick(("Why is it not growing", "When will it grow", "Is it ever going to grow")), "?", "asked")
    t.quote_other(t.P, pick(("Plants need time, sun, and water", "Seeds grow slowly, under the ground where we "
                             "can't see", "Every plant grows at its own speed")), ".", "said",
                  pick(("You have to be patient.", "Just keep taking care of it.", "")))
    care = pick(("watered the soil", "checked on the seeds", "sang to the seeds"))
    t.say(f"Every day, {t.s(h)} {care} and waited.", h)
    if t.maybe(0.6):
        t.scene(pick(("Some days it rained, and some days the sun was hot.", "The days went by slowly.",
                      "A whole week went by.")))
    t.say(f"One morning, {t.s(h)} saw a tiny green sprout!", h)
    if t.maybe(0.8):
        t.say(f"{t.S(h)} clapped {h.his} hands and jumped for joy.", h)
    t.scene("The sprout grew taller and taller.")
    if t.maybe(0.6):
        trouble, action, result = pick(_GARDEN_TROUBLES)
        t.scene(trouble)
        t.fill(action, h)
        t.scene(result)
    t.scene(f"By summer, there was {grown}.")
    if rng.random() < 0.5:
        t.say(f"{t.S(h)} picked the {crop} and shared {'it' if crop == 'pumpkin' else 'them'} with {h.his} family.", h)
    else:
        t.say(f"{t.S(h)} proudly showed {h.his} {t.p} the {crop}.", h)
        t.quote_other(t.P, "You grew that all by yourself", "!", "said")
    _moral(t, ("{name} learned that good things take time.",
               "From that day on, {s} knew that waiting is worth it.",
               "{name} learned that a little care every day makes things grow."), h)


_ARCS = {"lost": _arc_lost, "friend": _arc_friend, "fear": _arc_fear, "share": _arc_share, "help": _arc_help,
         "trip": _arc_trip, "weather": _arc_weather, "broken": _arc_broken, "gift": _arc_gift,
         "garden": _arc_garden}
_ARC_NAMES = tuple(_ARCS)


# ---------------------------------------------------------------------------- assembling a story
@dataclass(frozen=True)
class Story:
    """One story with what it is about (for tests and inspection)."""

    text: str
    arc: str                    # one of the arc names ("lost", "friend", ...)
    cast: dict[str, bool]       # named characters: name -> is female (pronouns she/her)
    hero: str


def _build(rng: random.Random) -> tuple[str, str, _Char, _Char]:
    """One story that fits the length bounds: (text, arc name, hero, friend)."""
    while True:
        t = _Teller(rng, rng.choice(_DENSITIES))
        target = MIN_WORDS + t.upto(MAX_WORDS - MIN_WORDS - 30)
        hero = _make_char(t, rng.random() < 0.35)
        friend = _make_char(t, rng.random() < 0.3, avoid=hero.name)
        arc = t.pick(_ARC_NAMES)
        _ARCS[arc](t, hero, friend)
        lines = t.lines
        words = " ".join(lines).count(" ") + 1
        if words < target and t.pool:     # up to _MAX_SCENERY place sentences at the mark
            extra, pool, start = [], t.pool, t.upto(len(t.pool))
            for k in range(min(int(_MAX_SCENERY * t.density), len(pool))):
                if words >= target:
                    break
                line = pool[(start + k) % len(pool)]
                extra.append(line)
                words += line.count(" ") + 1
            lines[t.mark:t.mark] = extra
        for line in t.some(_CLOSINGS, 3) if words < MIN_WORDS else ():
            line = line.format(name=hero.name, his=hero.his, relative=t.pick(_RELATIVES), p=t.p)
            lines.append(line)
            words += line.count(" ") + 1
            if words >= MIN_WORDS:
                break
        if MIN_WORDS <= words <= MAX_WORDS:
            return " ".join(lines), arc, hero, friend


def tell(seed: int, index: int) -> Story:
    """Story ``index`` of the corpus with ``seed``, with its arc and named cast."""
    text, arc, hero, friend = _build(random.Random(f"{seed}:{index}"))
    cast = {hero.name: hero.female}
    if friend.name in text:
        cast[friend.name] = friend.female
    return Story(text, arc, cast, hero.name)


def iter_stories(n: int, seed: int) -> Iterator[str]:
    """Stories 0 .. n-1 of the corpus with ``seed``, one at a time."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    for i in range(n):
        yield _build(random.Random(f"{seed}:{i}"))[0]


def generate_stories(n: int, seed: int) -> list[str]:
    """Return n short children's stories (plain English text, one story per string)."""
    return list(iter_stories(n, seed))
