"""Held-out check-accuracy sets, built differently from the TFT scenarios (issue #15).

The public scenarios are what the checks were tuned on; these sets are made another way, from
a seed, with the ground truth known by construction:

- `small_noisy`: 30-60 scenario-1 conversations, about 4 in 10 assistant turns corrupted the
  ways scenario 2 does (a reply swapped for one from another conversation or from another
  service domain, a reply replaced by a service call from another conversation, a call sent
  to the other service tool, a call's arguments taken from another conversation, a call
  replaced by a reply), where the foreign replies come from several service domains other
  than hotels (flights, banking, weather, car rental, pharmacy).
- `mix`: clean scenario-1 conversations mixed with conversations of those other domains, which
  are 30-60% of the corpus; their service calls are renamed to the task's tool names with
  their own arguments kept, and half of them have their messages shuffled.

The domains below are bench fixtures for planting foreign data; the checks never see them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# Each domain: a search tool and an action tool (renamed to the task's two service tools in a
# mix), value pools, result fields, and what its users and assistant say.
DOMAINS: dict[str, dict] = {
    "flights": {
        "values": {"origin_city": ["Boston", "Denver", "Seattle", "Atlanta", "Chicago"],
                   "destination_city": ["Miami", "Phoenix", "Portland", "Dallas", "Newark"],
                   "departure_date": ["2019-03-05", "2019-03-11", "2019-03-14"],
                   "seating_class": ["Economy", "Premium Economy", "Business"],
                   "airlines": ["Delta Airlines", "United Airlines", "Southwest Airlines"],
                   "number_of_tickets": ["1", "2", "3"]},
        "search": ("SearchOnewayFlight", ["origin_city", "destination_city", "departure_date",
                                          "seating_class"]),
        "action": ("ReserveOnewayFlight", ["origin_city", "destination_city", "departure_date",
                                           "airlines", "number_of_tickets"]),
        "result": {"outbound_departure_time": ["07:15", "10:40", "16:05"],
                   "price": ["213", "347", "489"], "is_nonstop": ["True", "False"],
                   "number_stops": ["0", "1"]},
        "user": ["I need a flight from {origin_city} to {destination_city}.",
                 "I want to fly out on {departure_date} in {seating_class}.",
                 "Book {number_of_tickets} tickets on {airlines}, please.",
                 "Is it a nonstop flight? How many layovers?",
                 "Which terminal does it leave from and is a checked bag included?",
                 "Thanks, that's all for my trip."],
        "assistant": ["Where are you flying from and to?",
                      "There is a {airlines} flight departing at 10:40 with one layover for $347.",
                      "Your {seating_class} seat to {destination_city} is booked; boarding"
                      " starts 40 minutes before departure.",
                      "Do you want a window or an aisle seat on the plane?",
                      "The flight lands at the airport at 6 pm local time, baggage claim 4.",
                      "Safe travels and enjoy your flight!"],
    },
    "banking": {
        "values": {"account_type": ["checking", "savings"],
                   "recipient_account_name": ["Jessica", "Mr. Patel", "Landlord LLC"],
                   "amount": ["250", "1200", "75"],
                   "recipient_account_type": ["checking", "savings"],
                   "transfer_date": ["2019-03-02", "2019-03-08"]},
        "search": ("CheckBalance", ["account_type"]),
        "action": ("TransferMoney", ["account_type", "amount", "recipient_account_name",
                                     "recipient_account_type"]),
        "result": {"balance": ["4,820.17", "12,004.55", "310.02"],
                   "account_number": ["****4421", "****9083"],
                   "overdraft_limit": ["500", "0"]},
        "user": ["What's the balance on my {account_type} account?",
                 "Please transfer ${amount} to {recipient_account_name}.",
                 "Send it to their {recipient_account_type} account.",
                 "Is there a fee for a wire transfer and when does the deposit clear?",
                 "Can you also check my overdraft limit?",
                 "Great, thanks for the help with my account."],
        "assistant": ["Which account would you like me to check, checking or savings?",
                      "Your {account_type} balance is $4,820.17 after pending deposits.",
                      "Please confirm: transfer ${amount} from your {account_type} account to"
                      " {recipient_account_name}.",
                      "The transfer went through; the funds should arrive within one"
                      " business day.",
                      "Wire transfers carry a $15 fee and the deposit clears overnight.",
                      "Is there anything else you need for your bank account?"],
    },
    "weather": {
        "values": {"city": ["Chicago", "Vancouver", "Sacramento", "Austin", "Toronto"],
                   "date": ["2019-03-03", "2019-03-07", "2019-03-10"],
                   "unit": ["celsius", "fahrenheit"], "hours": ["6", "12", "24"]},
        "search": ("GetWeather", ["city", "date"]),
        "action": ("GetHourlyForecast", ["city", "date", "hours", "unit"]),
        "result": {"temperature": ["61", "48", "75"], "humidity": ["40", "82", "65"],
                   "precipitation": ["10", "70", "0"], "wind": ["5", "14", "22"]},
        "user": ["What will the weather be like in {city} on {date}?",
                 "Will it rain? Should I bring an umbrella?",
                 "Give me the hourly forecast for the next {hours} hours in {unit}.",
                 "How windy will it get in the afternoon?",
                 "What about the humidity and the chance of snow?",
                 "Thanks, I'll dress warmly then."],
        "assistant": ["Which city do you want the forecast for?",
                      "Expect a high of 61 degrees with a 70 percent chance of rain showers.",
                      "It will be mostly sunny, humidity around 40 percent, light breeze.",
                      "Winds pick up to 22 miles per hour by the afternoon; bring a jacket.",
                      "The hourly forecast shows temperatures dropping below freezing tonight.",
                      "Stay dry and have a nice day!"],
    },
    "car_rental": {
        "values": {"pickup_location": ["LAX International Airport", "Union Station",
                                       "Downtown Seattle"],
                   "pickup_date": ["2019-03-04", "2019-03-09"],
                   "dropoff_date": ["2019-03-06", "2019-03-12"],
                   "pickup_time": ["09:00", "14:30"],
                   "car_type": ["Compact", "SUV", "Standard"],
                   "add_insurance": ["True", "False"]},
        "search": ("GetCarsAvailable", ["pickup_location", "pickup_date", "pickup_time",
                                        "dropoff_date", "car_type"]),
        "action": ("ReserveCar", ["pickup_location", "pickup_date", "pickup_time",
                                  "dropoff_date", "car_type", "add_insurance"]),
        "result": {"car_name": ["Toyota Corolla", "Ford Escape", "Honda Accord"],
                   "price_per_day": ["42", "67", "55"], "mileage": ["unlimited", "200"]},
        "user": ["I need to rent a car at {pickup_location}.",
                 "Pick it up on {pickup_date} at {pickup_time}, return on {dropoff_date}.",
                 "A {car_type} would be good. Does it have unlimited mileage?",
                 "Add the insurance coverage, please.",
                 "Can I drop the vehicle off at a different location?",
                 "Perfect, thanks for the rental."],
        "assistant": ["Where would you like to pick up the rental car?",
                      "I found a Toyota Corolla for $42 per day with unlimited mileage.",
                      "Your {car_type} rental is confirmed; pick up the keys at the counter.",
                      "Would you like to add collision insurance for $12 a day?",
                      "One-way drop off costs an extra $50 and requires a full gas tank.",
                      "Drive safely and enjoy the car!"],
    },
    "pharmacy": {
        "values": {"medication_name": ["amoxicillin", "lisinopril", "ibuprofen"],
                   "dosage": ["250 mg", "10 mg", "400 mg"],
                   "pharmacy_location": ["Elm Street Pharmacy", "CVS on Main", "Walgreens"],
                   "prescription_id": ["RX-20931", "RX-55102"],
                   "quantity": ["30", "60", "90"]},
        "search": ("CheckPrescriptionStatus", ["prescription_id", "medication_name"]),
        "action": ("RefillPrescription", ["prescription_id", "medication_name", "dosage",
                                          "quantity", "pharmacy_location"]),
        "result": {"refills_remaining": ["2", "0", "5"], "copay": ["5", "12"],
                   "ready_for_pickup": ["True", "False"]},
        "user": ["I need to refill my {medication_name} prescription.",
                 "The prescription number is {prescription_id}, {dosage}.",
                 "Send it to {pharmacy_location}, {quantity} tablets.",
                 "Are there any side effects or drug interactions I should know about?",
                 "How many refills do I have left on it?",
                 "Thanks, I'll pick up my medicine later."],
        "assistant": ["What is your prescription number and the medication?",
                      "Your {medication_name} refill will be ready for pickup in two hours.",
                      "You have 2 refills remaining and the copay is $5.",
                      "Please take the tablets with food and avoid alcohol with this medication.",
                      "The pharmacist can answer questions about dosage at the counter.",
                      "Get well soon!"],
    },
}
DOMAIN_NAMES = sorted(DOMAINS)
TASK_SERVICE_TOOLS = ("FindRestaurants", "ReserveRestaurant")   # what a mix renames calls to
MESSAGE_TOOL = "respond_to_user"


def read_traces(path: Path) -> list[list[dict]]:
    return [json.loads(json.loads(line)["context"])["messages"]
            for line in path.read_text().splitlines() if line.strip()]


def write_traces(path: Path, traces: list[list[dict]]) -> Path:
    path.write_text("".join(json.dumps({"context": json.dumps({"messages": ms})}) + "\n"
                            for ms in traces))
    return path


def _call(rng: random.Random, name: str, args: dict) -> dict:
    return {"role": "assistant", "tool_calls": [{
        "id": f"call_{rng.getrandbits(48):012x}", "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)}}]}


def _reply(rng: random.Random, text: str) -> dict:
    return _call(rng, MESSAGE_TOOL, {"message": text})


def _fill(rng: random.Random, template: str, values: dict) -> str:
    return template.format(**{k: rng.choice(v) for k, v in values.items()})


def foreign_reply(rng: random.Random, domain: str | None = None) -> str:
    d = DOMAINS[domain or rng.choice(DOMAIN_NAMES)]
    return _fill(rng, rng.choice(d["assistant"]), d["values"])


def foreign_trace(rng: random.Random, domain: str, rename: bool = True,
                  calls: bool = True) -> list[dict]:
    """A conversation of another service domain: user asks, assistant asks back, searches,
    reports, acts on it, says goodbye. With `rename`, its two service tools carry the task's
    tool names (arguments kept); without `calls`, it is talk only (no service call)."""
    d = DOMAINS[domain]
    vals = {k: rng.choice(v) for k, v in d["values"].items()}
    f = lambda tpl: tpl.format(**vals)  # noqa: E731
    names = {d["search"][0]: TASK_SERVICE_TOOLS[0], d["action"][0]: TASK_SERVICE_TOOLS[1]}

    def service(tool: tuple[str, list[str]]) -> list[dict]:
        if not calls:
            return []
        args = {k: vals[k] for k in tool[1]}
        rec = {**args, **{k: rng.choice(v) for k, v in d["result"].items()}}
        return [_call(rng, names[tool[0]] if rename else tool[0], args),
                {"role": "tool", "content": json.dumps([rec])}]

    user, asst = d["user"], d["assistant"]
    msgs = [{"role": "user", "content": f(user[0])}, _reply(rng, f(asst[0])),
            {"role": "user", "content": f(user[1])}, *service(d["search"]),
            _reply(rng, f(asst[1]))]
    for k in rng.sample([2, 3, 4], rng.randint(1, 3)):
        msgs += [{"role": "user", "content": f(user[k])}, _reply(rng, f(asst[k]))]
    msgs += [{"role": "user", "content": f(user[2])}, *service(d["action"]),
             _reply(rng, f(asst[2])), {"role": "user", "content": f(user[5])},
             _reply(rng, f(asst[5]))]
    return msgs


def _kind(m: dict) -> str:
    calls = m.get("tool_calls") or []
    return calls[0]["function"]["name"] if calls else "content"


def small_noisy(s1: list[list[dict]], seed: int, n: int = 35, rate: float = 0.4
                ) -> tuple[list[list[dict]], set[tuple[int, int]]]:
    """`n` scenario-1 conversations, each assistant turn corrupted with probability `rate`
    (mix of kinds as in scenario 2). Returns the traces and the corrupted (trace, turn)s."""
    rng = random.Random(seed)
    picked = [json.loads(json.dumps(t)) for t in rng.sample(s1, n)]
    others = [t for t in s1 if t not in picked]
    pool_calls = {name: [m for t in others for m in t if _kind(m) == name]
                  for name in TASK_SERVICE_TOOLS}
    pool_replies = [m for t in others for m in t if _kind(m) == MESSAGE_TOOL]
    truth: set[tuple[int, int]] = set()
    for ti, msgs in enumerate(picked):
        for i, m in enumerate(msgs):
            if m["role"] != "assistant" or rng.random() >= rate:
                continue
            kind = _kind(m)
            new = None
            if kind == MESSAGE_TOOL:
                r = rng.random()
                if r < 0.25:    # a reply from another conversation
                    new = json.loads(json.dumps(rng.choice(pool_replies)))
                elif r < 0.5:   # a reply from another service domain
                    new = _reply(rng, foreign_reply(rng))
                else:           # a service call from another conversation
                    new = json.loads(json.dumps(rng.choice(pool_calls[rng.choice(
                        TASK_SERVICE_TOOLS)])))
            elif kind in TASK_SERVICE_TOOLS:
                r = rng.random()
                if r < 0.35:    # sent to the other service tool, same arguments
                    new = json.loads(json.dumps(m))
                    fn = new["tool_calls"][0]["function"]
                    fn["name"] = [x for x in TASK_SERVICE_TOOLS if x != kind][0]
                elif r < 0.7:   # same tool, arguments of another conversation
                    new = json.loads(json.dumps(m))
                    other = rng.choice(pool_calls[kind])["tool_calls"][0]["function"]
                    if other["arguments"] == new["tool_calls"][0]["function"]["arguments"]:
                        continue
                    new["tool_calls"][0]["function"]["arguments"] = other["arguments"]
                else:           # replaced by a reply from another conversation
                    new = json.loads(json.dumps(rng.choice(pool_replies)))
            if new is None or new == m:
                continue
            new["tool_calls"][0]["id"] = m["tool_calls"][0]["id"] if m.get("tool_calls") else \
                new["tool_calls"][0]["id"]
            msgs[i] = new
            truth.add((ti, i))
    return picked, truth


def mix(s1: list[list[dict]], seed: int, share: float, on_task: int = 40
        ) -> tuple[list[list[dict]], set[int]]:
    """`on_task` clean scenario-1 conversations and foreign ones (from all the domains in turn)
    making `share` of the corpus; half of the foreign ones shuffled. Returns the traces (in a
    random order) and the indices of the foreign ones."""
    rng = random.Random(seed)
    own = [json.loads(json.dumps(t)) for t in rng.sample(s1, on_task)]
    n_foreign = round(on_task * share / (1 - share))
    foreign = []
    for k in range(n_foreign):
        t = foreign_trace(rng, DOMAIN_NAMES[k % len(DOMAIN_NAMES)])
        if k % 2:
            rng.shuffle(t)
        foreign.append(t)
    tagged = [(t, False) for t in own] + [(t, True) for t in foreign]
    rng.shuffle(tagged)
    return [t for t, _ in tagged], {i for i, (_, f) in enumerate(tagged) if f}


SMALL_SETS = ((30, 101), (30, 104), (30, 107), (45, 102), (45, 105), (45, 108),
              (60, 103), (60, 106), (60, 109))   # (conversations, seed)
MIX_SHARES = ((0.3, 201), (0.45, 202), (0.6, 203))   # (foreign share, seed)
# mixes of seeds nothing was tuned on, shares in steps of 5 points
UNTUNED_MIXES = tuple((round(0.3 + 0.05 * k, 2), 9601 + k) for k in range(7))
# ten more seeds per size that no threshold was tuned on (issue #15: every small corpus, not
# only the pooled ones, must meet the targets); the bench reports them apart
# a second batch of ten per size (seeds 93xx-95xx), drawn after the first batch's results were
# in and nothing was tuned on either: the check that the first batch's picture holds
UNTUNED_SETS = tuple((n, base + 100 * k + j) for base in (9000, 9300)
                     for k, n in enumerate((30, 45, 60)) for j in range(1, 11))


def _pr(pred: set, truth: set) -> tuple[float, float]:
    tp = len(pred & truth)
    return (tp / len(pred) if pred else 1.0), (tp / len(truth) if truth else 1.0)


def _checked(folder: Path, name: str, traces: list[list[dict]], task: Path) -> tuple[dict, dict]:
    """Import the traces into a fresh store, run the default checks; the report and line ->
    index of the trace in `traces`."""
    from db import open_db
    from workbench.checks import run_checks
    from workbench.traces.importing import import_files

    path = write_traces(folder / f"{name}.jsonl", traces)
    db = open_db(folder / f"{name}.db")
    import_files(db, [path], task=task)
    lines = sorted(r[0] for r in db.execute("SELECT line FROM traces"))
    return run_checks(db), {line: k for k, line in enumerate(lines)}


def measure_small(folder: Path, data: Path, n: int, seed: int) -> dict:
    """Suspect turns (error flags on turns) against the corrupted turns of a small set."""
    s1 = read_traces(next(data.glob("scenario-1-*")) / "traces.jsonl")
    traces, truth = small_noisy(s1, seed, n)
    rep, index = _checked(folder, f"small-{n}-{seed}", traces,
                          next(data.glob("scenario-1-*")) / "job_description.json")
    pred = {(index[f["line"]], f["message_index"]) for f in rep["flags"]
            if f["severity"] == "error" and f["message_index"] is not None}
    p, r = _pr(pred, truth)
    return {"traces": n, "seed": seed, "corrupted": len(truth), "suspect": len(pred),
            "correct": len(pred & truth),
            "precision": p, "recall": r,
            "excluded": len({index[f["line"]] for f in rep["flags"]
                             if f["severity"] == "error" and f["message_index"] is None}),
            "missed": sorted(truth - pred), "wrong": sorted(pred - truth)}


def measure_mix(folder: Path, data: Path, share: float, seed: int, on_task: int = 40) -> dict:
    """Excluded traces (trace-level errors) against the foreign traces of a mix."""
    s1 = read_traces(next(data.glob("scenario-1-*")) / "traces.jsonl")
    traces, foreign = mix(s1, seed, share, on_task)
    rep, index = _checked(folder, f"mix-{share}-{seed}", traces,
                          next(data.glob("scenario-1-*")) / "job_description.json")
    pred = {index[f["line"]] for f in rep["flags"]
            if f["severity"] == "error" and f["message_index"] is None}
    p, r = _pr(pred, foreign)
    return {"traces": len(traces), "foreign": len(foreign), "share": share, "seed": seed,
            "excluded": len(pred), "precision": p, "recall": r,
            "missed": sorted(foreign - pred), "wrong": sorted(pred - foreign)}
