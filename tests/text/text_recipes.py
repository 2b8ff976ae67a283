"""A reference-model recipe for text membership tests: TF-IDF + logistic regression on the strings."""


def tfidf_logreg(x, y, seed):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(), LogisticRegression(C=100.0, max_iter=500, random_state=seed)).fit(
        list(x), y.numpy())
