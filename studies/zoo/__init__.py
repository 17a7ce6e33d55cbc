"""The first zoo (zoo/): its builder, its polish to the study recipe's plateau, the zoo study and its pilot."""
