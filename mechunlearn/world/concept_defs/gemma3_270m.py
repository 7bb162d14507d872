"""Concepts for gemma-3-270m (Google's base model, Q4_K_M GGUF from the gemma3-270m wheels), from `facts`.

Every question of `facts`, and the extra questions below (written for this model, which
continues "The capital of France is" with "the capital of the country of France"), was asked of
the unedited model: greedy, 8 new tokens, answered when the answer is among the first five
words (`answer_known`). Those it did not answer are listed in `UNANSWERED` and left out;
`build_concept_file` re-checks the rest.
"""

from mechunlearn.world.concept_defs.facts import CONTROLS, FACTS, select

MODEL_ID = "gemma-3-270m"

EXTRA = {
    "Germany": [("Berlin is the capital of", "Germany"), ("Munich is a city in southern", "Germany"), ("The Berlin Wall divided East and West", "Germany")],
    "China": [("Beijing is the capital of", "China"), ("Shanghai is a large city in", "China"), ("The Great Wall of", "China")],
    "Spain": [("Madrid is the capital of", "Spain"), ("Barcelona is a city in", "Spain"), ("Flamenco is a dance from", "Spain")],
    "Greece": [("Athens is the capital of", "Greece"), ("The Parthenon is a temple in", "Athens"), ("The Olympic Games began in ancient", "Greece")],
    "Canada": [("Toronto is a city in", "Canada"), ("Vancouver is a city in", "Canada"), ("Maple syrup is a famous product of", "Canada")],
    "Mexico": [("Mexico City is the capital of", "Mexico"), ("The Mayan ruins of Chichen Itza are in", "Mexico")],
    "Brazil": [("Brasília is the capital of", "Brazil"), ("São Paulo is the largest city in", "Brazil")],
    "Australia": [("Sydney is the largest city in", "Australia"), ("Canberra is the capital of", "Australia")],
    "Moon": [("Neil Armstrong was the first man to walk on the", "Moon"), ("The Apollo astronauts landed on the", "Moon")],
    "planets": [("Saturn is famous for its", "rings"), ("Mercury, Venus, Earth and Mars are", "planets")],
    "water": [("Fish live in", "water"), ("H2O is the chemical formula for", "water")],
    "dog": [("Man's best friend is the", "dog"), ("A dog wags its", "tail")],
    "football": [("The FIFA World Cup is a tournament in", "football"), ("Lionel Messi is a famous", "football")],
    "law": [("Lawyers study", "law"), ("A judge works in a", "court")],
    "Buddhism": [("Zen is a school of", "Buddhism"), ("The Dalai Lama is a Buddhist", "monk")],
    "London": [("Big Ben is a clock tower in", "London"), ("The River Thames flows through", "London")],
    "Paris": [("The Louvre is a museum in", "Paris"), ("Notre-Dame Cathedral is in", "Paris")],
    "Russia": [("Moscow is the capital of", "Russia"), ("Vladimir Putin is the president of", "Russia")],
    "Mars": [("Mars is known as the Red", "Planet"), ("The Curiosity rover explores the surface of", "Mars")],
    "money": [("A dollar is a unit of", "currency"), ("Banks lend", "money")],
}
"""Questions written for this model, beside those of `facts`."""

UNANSWERED: tuple[str, ...] = (
    'The Japanese language is spoken in',
    'The capital of France is',
    'The capital of Germany is',
    'Volkswagen and BMW are car companies from',
    'The capital of Italy is',
    'The capital of China is',
    'The Yangtze River is the longest river in',
    'The Chinese language is spoken in',
    'The capital of Spain is',
    'The Spanish language comes from',
    'The capital of Russia is',
    'The Kremlin is located in',
    'Moscow is the capital of',
    'Mummies were made in ancient',
    'The Suez Canal is located in',
    'People from England speak',
    'The capital of Greece is',
    'Socrates was a philosopher from ancient',
    'The capital of Canada is',
    'Ottawa is the capital of',
    'Toronto is a city in',
    'Maple syrup is a famous product of',
    'Lions and elephants live on the savannas of',
    'The natural satellite of the Earth is the',
    "The Earth's only natural satellite is the",
    'The largest planet in the solar system is',
    'The planet closest to the sun is',
    'The red planet is called',
    'Christians go to church on',
    'A circle has no',
    'The scientist who studies living things is a',
    'A vaccine protects you from a',
    'A musician who writes music is called a',
    'Water freezes at zero degrees',
    'Ice is frozen',
    'Fish live in',
    'A puppy is a young',
    'People keep their money in a',
    'A hundred cents make one',
    'A dollar is a unit of',
    'A person accused of a crime is the',
    'A judge works in a',
    'The Eiffel Tower is in',
    'The capital city of France is',
    'Notre-Dame Cathedral is in',
    'The capital city of England is',
    'The British Museum is in',
    'Buckingham Palace is in',
    'Big Ben is a clock tower in',
    'The River Thames flows through',
    'Real Madrid and Barcelona are football',
    'In soccer, only the goalkeeper can touch the ball with his',
    'The FIFA World Cup is a tournament in',
    'The capital of Brazil is',
    'The largest country in South America is',
    'Samba is a dance from',
    'Brasília is the capital of',
    'The capital of Australia is',
    'Kangaroos live in',
    'The Sydney Opera House is in',
    'Melbourne is a city in',
    'The capital of Mexico is',
    'Tequila is a drink from',
    'The country south of the United States is',
    'The Mayan ruins of Chichen Itza are in',
    'The capital of South Korea is',
    'The capital of North Korea is',
    'The Red Planet is',
    'The fourth planet from the Sun is',
    'Olympus Mons is a volcano on',
    'The planet between Earth and Jupiter is',
    'The ancient Olympic Games began in',
    'The five rings are the symbol of the',
    'The Moonlight Sonata was composed by',
    'The Ninth Symphony with the Ode to Joy was written by',
    'The composer who kept writing music after he became deaf was',
    'Für Elise is a piano piece by',
    'The game in which you try to checkmate the king is',
    'In chess, the most powerful piece is the',
    'A chess board has sixty-four',
    'In chess, the piece that moves diagonally is the',
    'The smallest piece in chess is the',
    'A young cat is called a',
    'The sound a cat makes is',
    'A pet that purrs and chases mice is a',
    'Kittens grow up to be',
    'Cats like to chase',
    'The French emperor who was exiled to Elba was',
    'Napoleon was born on the island of',
    'The goal of Buddhism is to reach',
    'A follower of Buddhism is called a',
    'Buddhist monks live in a',
    'Zen is a school of',
    'An hour has sixty',
)
"""Prompts whose answer the model's greedy continuation did not contain (checked 2026-12-01)."""

TOO_FEW = ("Beethoven", "London", "Paris", "Russia", "cat", "chess", "money")
"""Concepts of `facts` with fewer than four questions the model answers (`build_concept_file`'s minimum)."""

NAMES = tuple(n for n in FACTS if n not in TOO_FEW)
"""The concepts of this model's file."""

CONCEPTS = select(NAMES, UNANSWERED, {k: v for k, v in EXTRA.items() if k in NAMES})

UNRELATED = [q for q in CONTROLS if q[0] not in UNANSWERED]
"""Generic control questions that the model answers."""
