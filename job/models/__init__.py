"""The models: the Keras rating models, the item-item ranker, and the block scorer that turns
both into every user's predicted ratings and recommendation scores."""
