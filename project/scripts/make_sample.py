"""Generate the bundled sample corpus (``project/sample/``): synthetic business and science documents with
reference summaries, a document-type label and SQuAD 2.0 questions (some unanswerable). Every third document
is long (``LONG_SENTENCES`` sentences, 2,000-8,000 BPE pieces), with its facts, and so the answers, anywhere in
it: far past the windows of local attention and the decoder's positions, so that what LED adds for long
documents (global attention, segmented QA/classification heads) is what trains and is evaluated.

Every document is written from templates by this script, drawing only from ``random.Random(seed)``, so a seed
gives the same files on every platform (``tests/test_project.py`` checks the committed sample against a fresh
run). The text was written for this repository and is released under CC0 1.0 (see ``sample/README.md``): no
sentence comes from any existing corpus, and every name, company, place and number is invented.

Why templates: the point of the sample is a pipeline that measurably learns on a 2-core CPU in minutes.
Each document type has its own vocabulary (the labels are learnable), its facts sit in fixed phrasings at
random places among filler sentences (answers must be found, not memorised by position), and summaries
restate the facts in a fixed per-type form (a tiny model can learn the form and some of the copying). Long
documents add record-keeping sentences with their own invented names, dates and figures (``LOG_TEMPLATES``),
so that the filler does not just repeat and the facts' names must be told from the other names around them.

Usage: python scripts/make_sample.py sample --train 90 --dev 15 --seed 13
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Dict, List, Optional, Tuple

LABELS = ("CONTRACT", "FINANCE", "INCIDENT", "RESEARCH")

FIRST = ["Maria", "James", "Aiko", "Daniel", "Priya", "Lukas", "Fatima", "Oliver", "Chen", "Sofia", "Mateo",
         "Hannah", "Kwame", "Elena", "Tomas", "Ingrid", "Rahul", "Grace", "Yusuf", "Clara", "Nadia", "Victor",
         "Leila", "Samuel"]
LAST = ["Lopez", "Becker", "Tanaka", "Okafor", "Novak", "Silva", "Hughes", "Moreau", "Kowalski", "Haddad",
        "Lindqvist", "Rossi", "Nakamura", "Mensah", "Fischer", "Duarte", "Kim", "Walsh", "Petrov", "Ibrahim",
        "Varga", "Osei", "Laurent", "Brandt"]
COMPANY_ROOTS = ["Norvale", "Brightwater", "Kestrel", "Aldmoor", "Quanta Ridge", "Silverline", "Harbor Point",
                 "Corvid", "Luma", "Eastgate", "Pinecrest", "Vantor", "Orison", "Tidewell", "Granite Peak",
                 "Marlow", "Ashford", "Bluefin", "Redcliff", "Sunmere", "Northwind", "Ironbark", "Calder",
                 "Westbrook"]
COMPANY_SUFFIXES = ["Holdings", "Industries", "Systems", "Logistics", "Foods", "Energy", "Software", "Materials",
                    "Robotics", "Textiles"]
CITIES = ["Lyon", "Denver", "Osaka", "Leeds", "Porto", "Austin", "Gdansk", "Tampere", "Halifax", "Adelaide",
          "Bilbao", "Tucson", "Utrecht", "Nagoya", "Graz", "Cork", "Malmo", "Quebec City", "Perth", "Turin"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
QUARTERS = ["first quarter", "second quarter", "third quarter", "fourth quarter"]
SEGMENTS = ["cloud services", "industrial equipment", "consumer electronics", "packaged foods", "freight",
            "medical devices", "renewable power", "specialty chemicals"]
LAWS = ["Delaware", "New York", "California", "Texas", "Ontario", "England and Wales", "Ireland",
        "the Netherlands"]
PRODUCTS = ["steel fasteners", "lithium battery cells", "organic wheat flour", "hospital linens",
            "printed circuit boards", "diesel generators", "office furniture", "solar inverters"]
INSTITUTIONS = ["University of Tampere", "Halifax Institute of Technology", "Porto School of Medicine",
                "Graz Centre for Data Science", "Adelaide Marine Laboratory", "Utrecht Language Institute",
                "Denver Climate Observatory", "Osaka Robotics Lab"]
METHODS = ["a sparse attention encoder", "a graph neural network", "a contrastive pretraining objective",
           "a hierarchical topic model", "a gradient boosted ensemble", "a recurrent state space model"]
TASKS = ["clinical note classification", "flood forecasting", "protein function prediction",
         "legal document retrieval", "speech recognition", "crop yield estimation"]
ITEMS = ["patient records", "river gauge readings", "protein sequences", "court decisions", "audio recordings",
         "satellite images"]
METRICS = ["accuracy", "F1 score", "recall", "mean average precision"]
FUNDERS = ["National Science Foundation", "European Research Council", "Wellcome Trust",
           "Canadian Institutes of Health Research", "Japan Society for the Promotion of Science"]
FACILITIES = ["Riverside", "Northgate", "Harbour", "Hilltop", "Eastfield", "Lakeshore", "Millbrook", "Stonebridge"]
CAUSES = ["a failed hydraulic valve", "a blocked ventilation duct", "an overloaded conveyor belt",
          "a faulty pressure sensor", "a leaking chemical storage tank", "an electrical short circuit"]
ACTIONS = ["replace all hydraulic valves", "install additional gas detectors", "retrain all shift supervisors",
           "upgrade the fire suppression system", "inspect every conveyor weekly", "relocate the storage tanks"]
NUMBER_WORDS = ["two", "three", "four", "five", "six", "seven", "eight", "nine"]

GENERIC_FILLER = [
    "This document is provided for information purposes only and does not constitute advice of any kind.",
    "Figures in this document are unaudited unless stated otherwise.",
    "All amounts are stated in United States dollars.",
    "A copy of this document is kept on file at the registered office.",
    "Questions about this document may be sent to the contact listed on the cover page.",
    "Capitalised terms have the meaning given to them in the glossary at the end of this document.",
    "Nothing in this document should be read as a forecast of future results.",
    "The original version of this document was prepared in English.",
]


# Sentences of a long document: drawn per document, so lengths vary from about 2,000 to 4,000 BPE pieces with
# the project's tokenizer. A long document is asked about LONG_QUESTIONS of its facts (and one it lacks): the
# QA component reads the whole document once per question, so this keeps the project's run in minutes.
LONG_SENTENCES = (125, 210)
LONG_QUESTIONS = 2

# Record-keeping sentences that pad long documents with varied, plausible text of every type.
LOG_TEMPLATES = [
    "On {date}, {name} of {company} reviewed section {n} and asked for a revised draft.",
    "A meeting in {city} on {date} discussed item {n}; {name} took the minutes.",
    "{name} confirmed that the figures in table {n} match the records held in {city}.",
    "The working group led by {name} met {n} times before {date}.",
    "Correspondence with {company} about item {n} is filed under reference {ref}.",
    "{name} noted that appendix {n} was updated on {date} after comments from {company}.",
    "An earlier version of section {n}, circulated in {city}, contained a typing error that has been corrected.",
    "The review of item {n} by {name} found no further issues.",
]


def _log_sentence(rng: random.Random) -> str:
    return rng.choice(LOG_TEMPLATES).format(
        name=_name(rng), company=_company(rng), city=rng.choice(CITIES), date=_date(rng, rng.randint(2015, 2024)),
        n=rng.randint(2, 60), ref=f"{rng.choice('ABCDEFGH')}-{rng.randint(100, 999)}",
    )


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _company(rng: random.Random) -> str:
    return f"{rng.choice(COMPANY_ROOTS)} {rng.choice(COMPANY_SUFFIXES)}"


def _date(rng: random.Random, year: int) -> str:
    return f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {year}"


def _money(rng: random.Random, low: int, high: int) -> str:
    return f"${rng.randint(low, high)}.{rng.randint(0, 9)} million"


# Each document type: facts (sentence template, the slot answering its question, the question, whether the
# fact is always present), filler sentences, a title and a summary template. Slots are filled from ``s``.
Fact = Tuple[str, Optional[str], Optional[str], bool]


def finance(rng: random.Random) -> Tuple[Dict[str, str], str, List[Fact], List[str], str]:
    year = rng.randint(2015, 2024)
    up = rng.random() < 0.5
    s = {
        "company": _company(rng), "ceo": _name(rng), "cfo": _name(rng), "city": rng.choice(CITIES),
        "quarter": rng.choice(QUARTERS), "year": str(year), "revenue": _money(rng, 40, 900),
        "pct": str(rng.randint(2, 35)), "net_income": _money(rng, 2, 90), "segment": rng.choice(SEGMENTS),
        "employees": f"{rng.randint(2, 40) * 100:,}", "dividend": f"${rng.randint(5, 95) / 100:.2f}",
        "eps": f"${rng.randint(10, 400) / 100:.2f}",
        "change": "an increase" if up else "a decrease", "direction": "up" if up else "down",
        "outlook": "expects further growth" if up else "expects weaker demand",
    }
    title = "{company} quarterly report: results for the {quarter} of {year}"
    facts: List[Fact] = [
        ("Revenue for the {quarter} of {year} was {revenue}, {change} of {pct} percent compared with the same "
         "period a year earlier.", "revenue", "What was the revenue for the quarter?", True),
        ("Net income for the period reached {net_income}, or {eps} per diluted share.", "net_income",
         "What was the net income for the period?", True),
        ("Chief executive officer {ceo} said the company {outlook} in {segment} over the coming year.", "ceo",
         "Who is the chief executive officer?", True),
        ("The company is headquartered in {city} and employs about {employees} people.", "city",
         "Where is the company headquartered?", False),
        ("The board of directors declared a quarterly dividend of {dividend} per share.", "dividend",
         "What dividend did the board declare?", False),
        ("Chief financial officer {cfo} presented the figures to analysts on a conference call.", "cfo",
         "Who is the chief financial officer?", False),
    ]
    filler = [
        "Operating margin in {segment} improved as the company renegotiated supplier contracts.",
        "Cash and cash equivalents at the end of the quarter were sufficient to cover planned capital spending.",
        "The company repurchased shares during the quarter under its existing buyback programme.",
        "Inventory levels were reduced following a review of slow moving stock.",
        "Selling, general and administrative expenses rose in line with headcount.",
        "The effective tax rate for the quarter was broadly unchanged from the prior year.",
        "Management will host its annual investor day later in the year.",
        "Free cash flow was used to reduce outstanding debt under the revolving credit facility.",
        "Foreign exchange movements had a small negative effect on reported revenue.",
        "Analysts had expected slightly lower earnings for the quarter.",
        "Segment results are presented in the tables that accompany this report.",
        "The company continues to invest in research and development for {segment}.",
        "Order backlog at the end of the quarter was higher than at the start of the year.",
        "Shareholders approved all resolutions at the most recent annual general meeting.",
    ]
    summary = ("{company} reported {quarter} {year} revenue of {revenue}, {direction} {pct} percent, and net "
               "income of {net_income}. Chief executive {ceo} {outlook} in {segment}.")
    return s, title, facts, filler, summary


def contract(rng: random.Random) -> Tuple[Dict[str, str], str, List[Fact], List[str], str]:
    year = rng.randint(2015, 2024)
    s = {
        "supplier": _company(rng), "customer": _company(rng), "date": _date(rng, year),
        "product": rng.choice(PRODUCTS), "term": rng.choice(NUMBER_WORDS[:5]),
        "notice": f"{rng.choice([30, 45, 60, 90, 120])} days", "fee": _money(rng, 1, 60),
        "law": rng.choice(LAWS), "penalty": f"${rng.randint(5, 50) * 100:,}", "city": rng.choice(CITIES),
        "signatory": _name(rng),
    }
    title = "Supply agreement between {supplier} and {customer}"
    facts: List[Fact] = [
        ("This supply agreement is entered into on {date} between {supplier}, as supplier, and {customer}, as "
         "customer.", "supplier", "Who is the supplier?", True),
        ("The customer shall pay an annual fee of {fee}, invoiced quarterly in arrears.", "fee",
         "What is the annual fee?", True),
        ("This agreement and any dispute arising from it are governed by the laws of {law}.", "law",
         "Which law governs the agreement?", True),
        ("The agreement has an initial term of {term} years and renews automatically unless either party gives "
         "{notice} of written notice.", "notice", "How much notice is needed to end the agreement?", True),
        ("Late deliveries incur liquidated damages of {penalty} per day of delay.", "penalty",
         "What are the liquidated damages for late delivery?", False),
        ("Goods shall be delivered to the customer's warehouse in {city}.", "city",
         "Where must the goods be delivered?", False),
        ("The agreement was signed on behalf of the supplier by {signatory}.", "signatory",
         "Who signed the agreement for the supplier?", False),
    ]
    filler = [
        "The supplier shall deliver {product} that conform to the specifications in the first schedule.",
        "Each party shall keep the terms of this agreement confidential.",
        "Neither party may assign its rights under this agreement without the prior written consent of the other.",
        "The supplier warrants that the goods will be free from defects in materials and workmanship.",
        "Title and risk in the goods pass to the customer on delivery.",
        "Either party may terminate this agreement immediately if the other party becomes insolvent.",
        "Notices under this agreement must be given in writing and delivered by hand or by courier.",
        "The customer may inspect the goods within ten business days of delivery.",
        "Neither party is liable for delays caused by events beyond its reasonable control.",
        "This agreement constitutes the entire agreement between the parties.",
        "Any amendment to this agreement must be in writing and signed by both parties.",
        "The supplier shall maintain adequate insurance for the duration of the agreement.",
        "Invoices are payable within thirty days of receipt.",
        "The schedules form part of this agreement and have effect as if set out in full.",
    ]
    summary = ("{supplier} will supply {product} to {customer} for {term} years from {date} for an annual fee of "
               "{fee}. The agreement is governed by the laws of {law} and can be ended with {notice} of notice.")
    return s, title, facts, filler, summary


def research(rng: random.Random) -> Tuple[Dict[str, str], str, List[Fact], List[str], str]:
    k = rng.randrange(len(TASKS))
    s = {
        "author": _name(rng), "institution": rng.choice(INSTITUTIONS), "method": rng.choice(METHODS),
        "task": TASKS[k], "items": ITEMS[k], "n": f"{rng.randint(2, 95) * 1000:,}", "metric": rng.choice(METRICS),
        "gain": f"{rng.randint(1, 12)}.{rng.randint(0, 9)} points", "funder": rng.choice(FUNDERS),
        "y1": str(rng.randint(2005, 2014)), "y2": str(rng.randint(2016, 2023)), "code_city": rng.choice(CITIES),
    }
    title = "{method} for {task}: a study"
    facts: List[Fact] = [
        ("This work was carried out by {author} and colleagues at the {institution}.", "author",
         "Who led the study?", True),
        ("We evaluate on a corpus of {n} {items} collected between {y1} and {y2}.", "n",
         "How large is the evaluation corpus?", True),
        ("Our approach, {method}, improves {metric} by {gain} over the strongest baseline.", "gain",
         "How much does the method improve over the strongest baseline?", True),
        ("The research was funded by the {funder}.", "funder", "Who funded the research?", False),
        ("The experiments were run on a computing cluster in {code_city}.", "code_city",
         "Where were the experiments run?", False),
    ]
    filler = [
        "Prior work on {task} has relied on hand crafted features and small datasets.",
        "We describe the model architecture in the second section and the training procedure in the third.",
        "All hyperparameters were selected on a held out validation split.",
        "We report the mean of five runs with different random seeds.",
        "An ablation study shows that each component of the model contributes to the final result.",
        "Error analysis suggests that the remaining mistakes involve rare and ambiguous cases.",
        "The code and trained models will be released under an open source licence.",
        "We thank the anonymous reviewers for their helpful comments.",
        "Statistical significance was assessed with a paired bootstrap test.",
        "Limitations of the study include the focus on a single language and domain.",
        "Future work will extend the approach to larger and noisier collections of {items}.",
        "Related work is discussed in detail in the appendix.",
        "Training took less than a day on a single accelerator.",
        "The annotation guidelines are included in the supplementary material.",
    ]
    summary = ("Researchers at the {institution} propose {method} for {task}. On {n} {items} it improves {metric} "
               "by {gain} over the strongest baseline.")
    return s, title, facts, filler, summary


def incident(rng: random.Random) -> Tuple[Dict[str, str], str, List[Fact], List[str], str]:
    year = rng.randint(2015, 2024)
    s = {
        "facility": rng.choice(FACILITIES), "city": rng.choice(CITIES), "date": _date(rng, year),
        "cause": rng.choice(CAUSES), "injured": rng.choice(NUMBER_WORDS), "inspector": _name(rng),
        "action": rng.choice(ACTIONS), "company": _company(rng), "deadline": f"{rng.choice(MONTHS)} {year + 1}",
        "hours": f"{rng.randint(2, 30)} hours",
    }
    s["Injured"] = _capitalize(s["injured"])
    title = "Incident report: {facility} plant, {city}"
    facts: List[Fact] = [
        ("On {date}, an incident occurred at the {facility} plant of {company} in {city}.", "city",
         "Where did the incident occur?", True),
        ("The investigation found that the incident was caused by {cause}.", "cause",
         "What caused the incident?", True),
        ("In total, {injured} workers were treated for injuries at the scene.", "injured",
         "How many workers were injured?", True),
        ("As a corrective action, the company will {action} by {deadline}.", "deadline",
         "By when must the corrective action be completed?", False),
        ("This report was prepared by safety inspector {inspector}.", "inspector",
         "Who prepared the report?", False),
        ("Production at the plant was stopped for {hours}.", "hours", "How long was production stopped?", False),
    ]
    filler = [
        "Emergency services were called and arrived shortly after the alarm was raised.",
        "The affected area was cordoned off and the remaining staff were evacuated.",
        "Witness statements were collected from the shift supervisor and operators.",
        "Maintenance records for the equipment involved were reviewed as part of the investigation.",
        "The regulator was notified within the required reporting period.",
        "No environmental release beyond the site boundary was detected.",
        "Air quality measurements taken after the incident were within permitted limits.",
        "The plant operates three shifts and runs seven days a week.",
        "Training records showed that all operators on duty were certified.",
        "A follow up inspection is scheduled to confirm that the measures are effective.",
        "The investigation team included representatives of the workforce.",
        "Similar equipment at other sites of {company} will be checked.",
        "Photographs of the scene are attached in the annex to this report.",
        "The risk assessment for the process will be updated.",
    ]
    summary = ("An incident at the {facility} plant in {city} on {date} was caused by {cause}. {Injured} workers "
               "were injured, and the company will {action}.")
    return s, title, facts, filler, summary


GENERATORS = {"CONTRACT": contract, "FINANCE": finance, "INCIDENT": incident, "RESEARCH": research}


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def make_document(rng: random.Random, label: str, doc_id: str, all_questions: Dict[str, List[str]], long: bool):
    """One document as a JSONL record: text, summary, label and SQuAD 2.0 ``qas`` (answers by character offset).
    A ``long`` one has ``LONG_SENTENCES`` sentences of filler (its type's, generic and record-keeping ones)."""
    s, title, facts, filler, summary = GENERATORS[label](rng)
    present = [f for f in facts if f[3] or rng.random() < 0.5]
    missing = [f for f in facts if f not in present]
    chosen_filler = rng.sample(filler, 9) + rng.sample(GENERIC_FILLER, 2)
    if long:
        chosen_filler += [
            rng.choice(filler) if rng.random() < 0.4 else _log_sentence(rng)
            for _ in range(rng.randint(*LONG_SENTENCES) - len(chosen_filler))
        ]
    sentences = [("fact", f) for f in present] + [("filler", t) for t in chosen_filler]
    rng.shuffle(sentences)
    # Paragraphs of three or four sentences; the text is built piece by piece so that every answer's character
    # offset is known exactly.
    text = title.format(**s) + "\n\n"
    answers: Dict[str, Tuple[str, int]] = {}
    in_paragraph = 0
    size = rng.choice([3, 4])
    for kind, item in sentences:
        if in_paragraph == size:
            text += "\n\n"
            in_paragraph, size = 0, rng.choice([3, 4])
        elif in_paragraph:
            text += " "
        template = item[0] if kind == "fact" else item
        if kind == "fact" and item[1] is not None:
            marker = "{" + item[1] + "}"
            before, after = template.split(marker, 1)
            text += _capitalize(before.format(**s)) if before else ""
            answers[item[2]] = (s[item[1]] if before else _capitalize(s[item[1]]), len(text))
            text += answers[item[2]][0] + after.format(**s)
        else:
            text += _capitalize(template.format(**s))
        in_paragraph += 1
    # Every fact present in the document is asked about; one question has no answer: about an optional fact
    # left out of this document or, when none was left out, one that belongs to another type of document.
    qas = []
    for fact in rng.sample(present, LONG_QUESTIONS) if long else present:
        answer, start = answers[fact[2]]
        assert text[start : start + len(answer)] == answer
        qas.append({"id": f"{doc_id}-q{len(qas)}", "question": fact[2], "is_impossible": False,
                    "answers": [{"text": answer, "answer_start": start}]})
    if missing and rng.random() < 0.75:
        unanswerable = rng.choice(missing)[2]
    else:
        unanswerable = rng.choice(all_questions[rng.choice([lab for lab in LABELS if lab != label])])
    qas.append({"id": f"{doc_id}-q{len(qas)}", "question": unanswerable, "is_impossible": True, "answers": []})
    rng.shuffle(qas)
    return {"id": doc_id, "text": text, "summary": _capitalize(summary.format(**s)), "labels": label, "qas": qas}


def questions_by_label() -> Dict[str, List[str]]:
    rng = random.Random(0)
    return {label: [f[2] for f in GENERATORS[label](rng)[2]] for label in LABELS}


def make_split(rng: random.Random, prefix: str, count: int) -> List[Dict]:
    all_questions = questions_by_label()
    labels = [LABELS[i % len(LABELS)] for i in range(count)]  # balanced classes
    rng.shuffle(labels)
    return [make_document(rng, label, f"{prefix}-{i:04d}", all_questions, long=i % 3 == 0)
            for i, label in enumerate(labels)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--train", type=int, default=90, help="training documents")
    parser.add_argument("--dev", type=int, default=15, help="held-out documents")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    for name, count in (("train", args.train), ("dev", args.dev)):
        records = make_split(rng, name, count)
        with open(args.out_dir / f"{name}.jsonl", "w", encoding="utf8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        words = sum(len(r["text"].split()) for r in records) / len(records)
        questions = [qa for r in records for qa in r["qas"]]
        impossible = sum(qa["is_impossible"] for qa in questions)
        print(f"{name}: {len(records)} documents, {words:.0f} words on average, {len(questions)} questions "
              f"({impossible} unanswerable)")


if __name__ == "__main__":
    main()
