/* mtcool's C ABI in use: predict one image with a trained model.
 *
 *   cc examples/c/predict.c -Iinclude -Ltarget/release -lmtcool -o predict
 *   LD_LIBRARY_PATH=target/release ./predict runs/x/model.safetensors image.ppm logits.f32
 *
 * The image is a binary PGM (P5, grey) or PPM (P6, RGB) with 8-bit samples. Every task's logits are
 * written to the output file as little-endian f32, task after task; classification results are printed.
 */
#include <stdio.h>
#include <stdlib.h>

#include "mtcool.h"

static unsigned char *read_pnm(const char *path, int *w, int *h, int *c) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char magic[3] = {0};
    int maxval = 0;
    if (fscanf(f, "%2s %d %d %d", magic, w, h, &maxval) != 4 || maxval != 255 || fgetc(f) == EOF) {
        fclose(f);
        return NULL;
    }
    *c = magic[1] == '5' ? 1 : magic[1] == '6' ? 3 : 0;
    size_t n = (size_t)*w * (size_t)*h * (size_t)*c;
    unsigned char *px = *c ? malloc(n) : NULL;
    if (px && fread(px, 1, n, f) != n) {
        free(px);
        px = NULL;
    }
    fclose(f);
    return px;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL IMAGE.pnm OUT.f32\n", argv[0]);
        return 2;
    }
    mtc_model *m = NULL;
    if (mtc_load(argv[1], &m) != MTC_OK) {
        fprintf(stderr, "load: %s\n", mtc_last_error());
        return 1;
    }
    int iw, ih, ic, c, h, w, tasks;
    unsigned char *px = read_pnm(argv[2], &iw, &ih, &ic);
    if (!px) {
        fprintf(stderr, "%s: not a binary 8-bit PGM/PPM\n", argv[2]);
        return 1;
    }
    mtc_input_shape(m, &c, &h, &w);
    mtc_num_tasks(m, &tasks);
    float *x = malloc(sizeof(float) * (size_t)c * h * w);
    if (mtc_prepare(m, px, iw, ih, ic, x) != MTC_OK) {
        fprintf(stderr, "prepare: %s\n", mtc_last_error());
        return 1;
    }
    float **out = calloc((size_t)tasks, sizeof(float *));
    size_t *len = calloc((size_t)tasks, sizeof(size_t));
    for (int t = 0; t < tasks; t++) {
        mtc_output_len(m, t, 1, &len[t]);
        out[t] = malloc(sizeof(float) * len[t]);
    }
    if (mtc_run(m, x, 1, out) != MTC_OK) {
        fprintf(stderr, "run: %s\n", mtc_last_error());
        return 1;
    }
    FILE *f = fopen(argv[3], "wb");
    for (int t = 0; t < tasks; t++) {
        int kind, classes;
        mtc_task(m, t, &kind, &classes);
        fwrite(out[t], sizeof(float), len[t], f);
        if (kind == MTC_CLASSIFY) {
            int best = 0;
            for (int k = 1; k < classes; k++)
                if (out[t][k] > out[t][best]) best = k;
            printf("task %d: class %d\n", t + 1, best);
        } else {
            printf("task %d: segmentation, %d classes, %dx%d\n", t + 1, classes, w, h);
        }
        free(out[t]);
    }
    fclose(f);
    free(out);
    free(len);
    free(x);
    free(px);
    mtc_free(m);
    return 0;
}
