"""Transfer objectives beyond the paper, judged against the CE control (plan: studies/zoo/variants/PLAN.md).

    python -m studies.zoo.variants run --part select     # 8 pairs x 10 conditions + 8 CE controls, validation split
    python -m studies.zoo.variants choose                # the plan's rule on the selection records -> chosen.json
    python -m studies.zoo.variants run --part confirm    # only on a go: the chosen variant on all 56 pairs, test split
    python -m studies.zoo.variants report [--json]       # tables from the records

Every run is one ``timm_gkt.train`` process of the zoo study's recipe (``studies/zoo/recipe.py``), one folder
each, resumed when killed, skipped when its record (``studies/zoo/variants/runs/<run>.json``) exists.
"""
