/* DisCO and DisCO-b (spec/rl_objectives.md section 3): sequence scores, the discriminative objective per
 * question, and the squared-hinge trust region on KL(pi_old || pi_theta), with the reference code's
 * aggregation (3.3) and stop-gradient tricks (3.4). */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rl/objective_internal.h"

cg_tensor *cg_rl_disco_loss(const cg_rl_batch *b, cg_rl_stats *stats) {
    const cg_rl_config *cfg = b->cfg;
    const cg_rl_inputs *in = b->in;
    const int64_t n = b->n, T = b->T, G = in->group_size, nq = n / G;
    const bool lse = cfg->algo == CG_RL_DISCO;
    const float tau = cfg->disco_tau;

    /* spec 3: pos_mask = rewards == 1, neg_mask = rewards == 0; other rewards would be silently ignored by the
     * reference code, so they are an error here. */
    for (int64_t i = 0; i < n; i++)
        if (in->rewards[i] != 0.0f && in->rewards[i] != 1.0f) {
            cg_set_error(CG_ERR_INVALID_ARG, "rl loss (%s): reward of sequence %lld is %g; DisCO needs binary rewards "
                         "(1 = correct, 0 = wrong)", cg_rl_algo_name(cfg->algo), (long long)i, (double)in->rewards[i]);
            return NULL;
        }

    /* Host constants: 1/|o_i| (an empty response scores 0 instead of the reference's 0/0), the positives'
     * weights 1/n_pos within their question, the negatives' mask (or weights 1/n_neg for DisCO-b), and which
     * questions are valid (at least one positive and one negative, spec 3.3 item 3). */
    float *buf = calloc((size_t)(4 * n + nq), sizeof(float));
    if (!buf) {
        cg_set_error(CG_ERR_OOM, "rl loss (disco): host buffers");
        return NULL;
    }
    float *inv_len = buf, *wpos = buf + n, *negm = buf + 2 * n, *wneg = buf + 3 * n, *valid = buf + 4 * n;
    int64_t n_valid = 0;
    for (int64_t i = 0; i < n; i++) {
        double len = 0;
        for (int64_t t = 0; t < T; t++) len += b->mask[i * T + t];
        inv_len[i] = len > 0 ? (float)(1.0 / len) : 0.0f;
    }
    for (int64_t q = 0; q < nq; q++) {
        int64_t np = 0, nn = 0;
        for (int64_t k = 0; k < G; k++) {
            np += in->rewards[q * G + k] == 1.0f;
            nn += in->rewards[q * G + k] == 0.0f;
        }
        valid[q] = (np > 0 && nn > 0) ? 1.0f : 0.0f;
        n_valid += np > 0 && nn > 0;
        for (int64_t k = 0; k < G; k++) {
            bool pos = in->rewards[q * G + k] == 1.0f;
            wpos[q * G + k] = pos ? (float)(1.0 / (double)np) : 0.0f;
            negm[q * G + k] = pos ? 0.0f : 1.0f;
            wneg[q * G + k] = pos ? 0.0f : (float)(1.0 / (double)nn);
        }
    }
    const int64_t shape_n[1] = {n}, shape_q[1] = {nq}, shape_qg[2] = {nq, G};
    cg_tensor *inv_len_t = cg_rl_const_tensor(b->dev, 1, shape_n, inv_len);
    cg_tensor *wpos_t = cg_rl_const_tensor(b->dev, 2, shape_qg, wpos);
    cg_tensor *neg_t = cg_rl_const_tensor(b->dev, 2, shape_qg, lse ? negm : wneg);
    cg_tensor *valid_t = cg_rl_const_tensor(b->dev, 1, shape_q, valid);
    free(buf);
    if (!inv_len_t || !wpos_t || !neg_t || !valid_t) return NULL;

    /* spec 3.1: s = (1/|o|) sum_t logp_t (log-L) or (1/|o|) sum_t exp(logp_t - logp_old_t) (L-ratio). */
    cg_tensor *logp = in->logp, *x;
    if (cfg->disco_score == CG_DISCO_SCORE_LOG_L) x = cg_rl_masked(b, b->mask_t, logp);
    else x = cg_rl_masked(b, b->mask_t, cg_exp(cg_rl_masked(b, b->mask_t, cg_sub(logp, b->old_t))));
    cg_tensor *scores = cg_mul(cg_sum(x, 1, false), inv_len_t);
    cg_tensor *s = cg_reshape(scores, 2, shape_qg);
    cg_tensor *pos_mean = cg_sum(cg_mul(s, wpos_t), 1, false); /* [nq] */
    cg_tensor *neg_term;
    if (!lse) {
        neg_term = cg_sum(cg_mul(s, neg_t), 1, false); /* DisCO-b: mean negative score */
    } else {
        /* spec 3.4: e_j = exp(s_j/tau - sg(max_k s_k/tau)) over the negatives, S = sum_j e_j,
         * neg_term = tau * S / (sg(S) + eps): value ~tau, gradient sum_j softmax_j(s/tau) grad s_j (that of
         * tau log mean_j exp(s_j/tau)). The max is over the question's negatives, so the largest e_j is 1 and
         * S >= 1 keeps eps (float32 machine epsilon) negligible; a question without negatives gives S = 0
         * and is excluded below. */
        cg_tensor *st = cg_scale(s, 1.0f / tau);
        cg_tensor *shift = cg_detach(cg_max(cg_where(neg_t, st, cg_rl_scalar_tensor(b->dev, -1e30f)), 1, true));
        cg_tensor *z = cg_where(neg_t, cg_sub(st, shift), b->zero);
        cg_tensor *S = cg_sum(cg_mul(cg_exp(z), neg_t), 1, false);
        cg_tensor *lme = cg_div(S, cg_add_scalar(cg_detach(S), FLT_EPSILON));
        neg_term = cg_scale(lme, tau);
    }
    /* spec 3.3 items 4-5: sum over valid questions of mean_pos(s_pos - neg_term), divided by the number of all
     * questions (dropped ones included). */
    double q_den = in->seq_count > 0 ? in->seq_count / (double)G : (double)nq;
    cg_tensor *pg = cg_scale(cg_sum_all(cg_mul(cg_sub(pos_mean, neg_term), valid_t)), (float)(1.0 / q_den));
    cg_tensor *pg_loss = cg_neg(pg);

    /* spec 3.2: KL_hat, a token mean over the batch's real tokens; pi_old = sg(pi_theta) when old_logp is NULL. */
    cg_tensor *kl_tok;
    if (cfg->disco_kl == CG_DISCO_KL_K1) {
        kl_tok = cg_rl_masked(b, b->mask_t, cg_sub(b->old_t, logp));
    } else {
        cg_tensor *d = cg_rl_masked(b, b->mask_t, cg_sub(logp, b->old_t));
        kl_tok = cg_add_scalar(cg_sub(cg_exp(d), d), -1.0f); /* 0 at padding (d = 0 there) */
    }
    double kl_den = in->disco_kl_given && in->token_count > 0 ? in->token_count : b->n_tokens;
    cg_tensor *kl = cg_scale(cg_sum_all(kl_tok), (float)(1.0 / (kl_den > 0 ? kl_den : 1.0)));
    /* spec 3.2/3.4: penalty sg([beta (KL - delta)]_+) * KL, the gradient of (beta/2) [KL - delta]_+^2. With
     * data parallelism the coefficient comes from the KL over every rank's tokens (the gathered batch). */
    cg_tensor *coef;
    if (in->disco_kl_given) {
        double c = cfg->disco_beta * (in->disco_kl - cfg->disco_delta);
        coef = cg_rl_scalar_tensor(b->dev, (float)(c > 0 ? c : 0.0));
    } else {
        coef = cg_relu(cg_affine(cg_detach(kl), cfg->disco_beta, -cfg->disco_beta * cfg->disco_delta));
    }
    cg_tensor *penalty = cg_mul(coef, kl);
    cg_tensor *loss;
    if (n_valid > 0) {
        loss = cg_add(pg_loss, penalty);
    } else {
        /* spec 3.3 item 3: no valid question: the loss is the dummy 0 * mean(scores) (no penalty either). */
        loss = cg_scale(cg_mean_all(scores), 0.0f);
    }
    if (!loss) return NULL;

    if (stats) {
        cg_rl_token_stats(b, NULL, false, stats);
        stats->pg_loss = n_valid > 0 ? cg_rl_read_scalar(pg_loss) : 0.0;
        stats->disco_kl = in->disco_kl_given ? in->disco_kl : cg_rl_read_scalar(kl);
        stats->disco_penalty = n_valid > 0 ? cg_rl_read_scalar(penalty) : 0.0;
        stats->constraint_active = stats->disco_kl > cfg->disco_delta;
        stats->clip_frac = stats->constraint_active ? 1.0 : 0.0; /* the reference code's pg_clipfrac (spec 3.4) */
        stats->n_valid_groups = n_valid;
        float *sh = malloc(sizeof(float) * (size_t)n);
        if (sh && cg_rl_to_host(scores, sh) == CG_OK) {
            double sp = 0, sn = 0;
            int64_t cp = 0, cn = 0;
            for (int64_t i = 0; i < n; i++) {
                /* binary rewards: a question is valid exactly when its rewards are not all equal */
                if (!cg_group_all_equal(in->rewards + (i / G) * G, G)) {
                    if (in->rewards[i] == 1.0f) sp += sh[i], cp++;
                    else sn += sh[i], cn++;
                }
            }
            stats->score_pos_mean = cp ? sp / (double)cp : 0.0;
            stats->score_neg_mean = cn ? sn / (double)cn : 0.0;
        }
        free(sh);
    }
    return loss;
}
