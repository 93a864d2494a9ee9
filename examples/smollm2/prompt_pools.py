"""Word lists and templates for make_prompts.py's wide mix (the narrow mix's live there).

The wide mix spreads each domain over the kinds of request its benchmarks hold, without using any
benchmark item: grade-school word problems and competition-style problems in LaTeX for math;
docstring-to-function, one-line "write a function to ..." tasks and code reading for code;
writing, role-play, reasoning, extraction, STEM, humanities and advice requests for chat.
"""

from __future__ import annotations

NAMES = [
    "Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena",
    "Maya", "Noah", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Yara",
]
ITEMS = ["apple", "marble", "stamp", "pencil", "ticket", "card", "sticker", "book", "egg", "shell",
         "coin", "cupcake", "balloon", "brick", "seed", "bead"]

WORD_PROBLEMS = [
    "{a} has {x} {item}s. {b} gives {a} {y} more, and then {a} uses {z} of them. How many {item}s does {a} have now?",
    "A shop sells {item}s for ${x} each. {a} buys {y} of them and pays with a ${w} bill. How much change does {a} get?",
    "{a} reads {x} pages a day. How many days does {a} need to finish a book of {p} pages?",
    "A train travels at {x} km per hour for {y} hours and then at {z} km per hour for {v} hours. How far does it go in total?",
    "{a} saves ${x} every week. After {y} weeks {a} spends ${z} on a gift. How much money is left?",
    "A rectangle is {x} cm long and {y} cm wide. What are its area and its perimeter?",
    "{a} baked {x} cookies and packed them into boxes of {y}. How many full boxes are there and how many cookies are left over?",
    "What is {x}% of {p}, and what is {p} increased by {x}%?",
    "If 3 workers build a wall in {y} days, how many days do {x} workers need, working at the same rate?",
    "{a} is {x} years old. {b} is {y} years older than twice {a}'s age. How old will {b} be in {z} years?",
    "A farmer has {x} chickens and {y} cows. How many legs do the animals have altogether?",
    "{a} earns ${x} an hour and works {y} hours on weekdays and {z} hours on Saturday. How much does {a} earn in a week?",
    "A recipe needs {x} grams of flour for {y} muffins. How much flour is needed for {p} muffins?",
    "{a} runs {x} laps of a {y}-meter track every morning. How many kilometers does {a} run in {z} days?",
    "A tank holds {p} liters. It is filled at {x} liters per minute while it leaks {y} liters per minute. How long does it take to fill the empty tank?",
    "{a} bought {x} notebooks at ${y} each and {z} pens at $2 each, and got a 10% discount on the total. How much did {a} pay?",
    "A class has {p} students. {x}% of them walk to school and a third of the rest take the bus. How many students take the bus?",
    "{a} and {b} share {p} {item}s in the ratio {x}:{y}. How many does each get?",
    "A phone plan costs ${x} a month plus ${y} for every gigabyte over the limit. {a} used {z} gigabytes over the limit. What is the bill?",
    "{a} plants {x} rows of {y} tulips, and rabbits eat {z} of them. How many tulips are left?",
]

COMPETITION = [
    "Find all real numbers $x$ such that $x^2 - {s}x + {q} = 0$.",
    "What is the remainder when ${x}^{{{e}}}$ is divided by {m}?",
    "Compute $\\binom{{{n}}}{{{k}}}$.",
    "Simplify $\\sqrt{{{sq}}}$.",
    "What is the sum of the first {n} positive odd integers?",
    "Find the greatest common divisor of {g1} and {g2}.",
    "What is the least common multiple of {x} and {y}?",
    "How many positive divisors does {p} have?",
    "Two fair six-sided dice are rolled. What is the probability that the sum is {d}? Express your answer as a common fraction.",
    "A fair coin is flipped {n} times. What is the probability of getting exactly {k} heads? Express your answer as a common fraction.",
    "Solve the system $x + y = {s}$ and $x - y = {d2}$.",
    "If $f(x) = {x}x^2 - {y}x + {z}$, what is $f({k})$?",
    "What is the area of a triangle with vertices at $(0, 0)$, $({x}, 0)$ and $(0, {y})$?",
    "A circle has circumference ${c}\\pi$. What is its area? Express your answer in terms of $\\pi$.",
    "Convert ${p}_{{10}}$ to base {b}.",
    "Evaluate $\\log_{{{b}}} {pw}$.",
    "How many ways are there to arrange the letters of the word {word}?",
    "Find the value of $x$ if ${x}x + {y} = {z}x - {q}$.",
    "What is the sum of the interior angles of a convex polygon with {n} sides, in degrees?",
    "Compute $({x} + {y}i)({z} - {k}i)$, where $i^2 = -1$.",
    "The arithmetic sequence $ {x}, {xy}, {xyy}, \\ldots$ continues. What is its {n}th term?",
    "Find the determinant of the matrix $\\begin{{pmatrix}} {x} & {y} \\\\ {z} & {k} \\end{{pmatrix}}$.",
    "For how many integers $n$ with $1 \\le n \\le {p}$ is $n$ divisible by {x} or by {y}?",
    "What is the distance between the points $({x}, {y})$ and $({z}, {k})$?",
]
WORDS = ["BANANA", "LETTER", "CIRCLE", "PEPPER", "GARDEN", "MATH", "PUZZLE", "COOKIE", "RADAR", "TOMATO"]

CODE_TASKS = [
    "find the second largest number in a list", "check whether a string is a palindrome ignoring case and spaces",
    "count the vowels in a string", "remove duplicates from a list while keeping the order",
    "merge two sorted lists into one sorted list", "return the n-th Fibonacci number",
    "check whether a number is prime", "flatten a nested list of integers", "reverse the words in a sentence",
    "find the most common element in a list", "compute the factorial of a number iteratively",
    "rotate a list to the right by k positions", "return the indices of two numbers that add up to a target",
    "convert a Roman numeral to an integer", "check whether two strings are anagrams",
    "find the longest common prefix of a list of strings", "transpose a matrix given as a list of lists",
    "count the words in a text and return a dictionary of frequencies", "compute the running sum of a list",
    "find all pairs in a list whose difference is k", "return the sum of the digits of an integer",
    "check whether a list is sorted", "split a list into chunks of size n", "find the missing number in a list of 1..n",
    "convert a decimal number to binary without using bin()", "capitalize the first letter of every word",
    "find the maximum sum of a contiguous sublist", "compute the greatest common divisor of two numbers",
    "check whether brackets in a string are balanced", "return the unique characters of a string in order",
    "interleave two lists", "find the k smallest elements of a list", "compute the dot product of two vectors",
    "count the number of set bits in an integer", "check whether a year is a leap year",
    "remove all whitespace from a string", "sort a list of tuples by their second element",
    "find the intersection of two lists", "group a list of words by their first letter",
    "compute the median of a list of numbers", "validate an email address with a simple rule",
    "return the element that appears an odd number of times", "compress a string by counting repeated characters",
    "find the longest word in a sentence", "compute the power set of a list", "check whether a number is a perfect square",
    "multiply two matrices", "return the first non-repeating character of a string",
    "convert a list of pairs into a dictionary", "compute the area of a triangle from its three sides",
]
CODE_WRAPPERS = [
    "Write a function to {task}.",
    "Write a Python function to {task}.",
    "Write a python function to {task}. Include a few test cases.",
    "Implement a function that will {task}, and explain its time complexity.",
]
DOC_WRAPPERS = [
    "Write a Python function `{name}({args})` that does the following:\n{doc}",
    "Implement `{name}({args})` in Python.\n\nSpecification: {doc}",
    "Write a solution to the following problem and make sure that it passes the tests:\n```python\ndef {name}({args}):\n    \"\"\"{doc}\n    \"\"\"\n\n```",
    "Complete this function:\n```python\ndef {name}({args}):\n    \"\"\"{doc}\"\"\"\n```",
]
READ_WRAPPERS = [
    "Explain what the following Python function does, step by step:\n```python\n{src}\n```",
    "Can this function be simplified? Suggest a cleaner version.\n```python\n{src}\n```",
    "Write unit tests for this function:\n```python\n{src}\n```",
]

TOPICS = [
    "growing tomatoes", "public speaking", "saving money", "learning a language", "running a marathon",
    "cooking rice", "remote work", "time management", "writing a CV", "photography", "chess openings",
    "sleep hygiene", "composting", "job interviews", "budget travel", "baking bread", "version control",
    "meditation", "bird watching", "first aid", "negotiating a salary", "home workouts", "note taking",
    "electric cars", "renewable energy", "city cycling", "keeping a journal", "adopting a dog", "camping",
    "online privacy", "moving to a new city", "learning the guitar", "painting with watercolours",
    "starting a small business", "volunteering", "recycling", "smartphone addiction", "team sports",
    "houseplants", "coffee brewing", "studying for exams", "public libraries", "urban gardening",
]
WRITING = [
    "Write a short story of about 150 words about {t}.", "Write a persuasive paragraph in favour of {t}.",
    "Write a blog post introduction about {t}.", "Write a limerick about {t}.",
    "Write a product description for a new app that helps with {t}.", "Write a short speech for a school assembly about {t}.",
    "Write a tweet thread of four tweets about {t}.", "Draft a polite letter to a neighbour about {t}.",
    "Write a haiku about {t}.", "Write a short, friendly email asking a colleague for help with {t}.",
    "Rewrite this sentence in a more formal tone: \"{t} is kind of a big deal for me and I really want to get it right.\"",
]
ROLES = [
    "a ship's captain", "a medieval knight", "a travel agent", "a personal trainer", "a museum guide",
    "a detective", "a chef in a busy restaurant", "a patient math tutor", "an astronaut on the Moon",
    "a librarian", "a startup founder pitching to investors", "a park ranger", "a news reporter",
]
ROLEPLAY = [
    "Pretend you are {r}. Describe your typical day.", "You are {r}. A visitor asks you about {t}. What do you say?",
    "Act as {r} and give me advice on {t}.", "Imagine you are {r}. Write a diary entry about an unexpected event.",
]
CONCEPTS = [
    "photosynthesis", "entropy", "supply and demand", "the water cycle", "natural selection", "inflation",
    "how vaccines work", "plate tectonics", "the greenhouse effect", "how a transistor works", "black holes",
    "the Pythagorean theorem", "compound interest", "how the internet routes data", "the immune system",
    "Newton's laws of motion", "DNA replication", "opportunity cost", "machine learning", "the scientific method",
    "the causes of the First World War", "the Renaissance", "the Industrial Revolution", "democracy in ancient Athens",
    "the printing press", "the Silk Road", "impressionism", "utilitarianism", "the Cold War", "Shakespeare's sonnets",
    "the fall of the Roman Empire", "the French Revolution", "stoicism", "the Enlightenment", "the Great Depression",
]
EXPLAIN = [
    "Explain {c} in simple terms.", "Explain {c} to a ten-year-old in a short paragraph.",
    "What are the key ideas behind {c}? Answer in three bullet points.", "Why does {c} matter today?",
    "Give a short summary of {c} and one common misconception about it.", "Compare {c} and {c2}.",
]
ADVICE = [
    "Give me three practical tips for {t}.", "What are the most common mistakes people make with {t}, and how can they avoid them?",
    "Summarise the pros and cons of {t} in a small table.", "I have one hour to learn the basics of {t}. Make me a plan.",
    "Compare {t} and {u}: how are they similar and how are they different?",
]
REASONING = [
    "{a} is taller than {b}, and {b} is taller than {c}. Who is the shortest? Explain.",
    "If it takes {x} machines {x} minutes to make {x} widgets, how long do {y} machines need to make {y} widgets?",
    "{a} has {x} sisters and each sister has one brother. How many brothers does {a} have if {a} is a girl?",
    "A bat and a ball cost ${x}.10 in total. The bat costs ${x} more than the ball. How much does the ball cost?",
    "Which is heavier: {x} kilograms of feathers or {y} kilograms of steel? Explain your reasoning.",
    "{a}, {b} and {c} each own a different pet: a cat, a dog and a fish. {a} does not own the dog, and {c} owns the cat. Who owns what?",
]
CITIES = ["Lisbon", "Nairobi", "Osaka", "Lima", "Oslo", "Hanoi", "Accra", "Quito", "Tbilisi", "Perth"]
EXTRACTION = [
    "Extract every person's name and the city they live in from this text, as JSON:\n\"{a} moved from {c1} to {c2} in {yr}. "
    "Her friend {b} still lives in {c1}, while {d} works in {c3}.\"",
    "From the following note, list the dates and amounts as a table:\n\"On {m1} {x} we paid ${p} for rent; on {m2} {y} "
    "the electricity bill came to ${z}; on {m3} {k} {a} sent ${w} back.\"",
    "Identify the main complaint in this review and rate its sentiment from 1 to 5:\n\"I ordered the {item} set on {m1} {x}. "
    "It arrived {y} days late and one {item} was broken, but the support team from {c1} replied quickly.\"",
]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]
