/* mtcool's C ABI: run a trained mtcool model from C, C++ or anything with a C FFI.
 *
 * Link against libmtcool.so (target/release/ after `cargo build --release`). Every function returns
 * MTC_OK (0) or an error code, and then mtc_last_error() gives a one-line message (this thread's last
 * call; valid until its next call). Buffers are the caller's; the library never keeps a pointer.
 *
 *   mtc_model *m;
 *   if (mtc_load("runs/x/model.safetensors", &m) != MTC_OK) puts(mtc_last_error());
 *   mtc_input_shape(m, &c, &h, &w);             // inputs are [batch, c, h, w] floats
 *   mtc_prepare(m, pixels, iw, ih, ic, x);       // 8-bit interleaved image -> one prepared input
 *   mtc_run(m, x, batch, outputs);               // outputs[t]: mtc_output_len(m, t, batch) floats
 *   mtc_free(m);
 */
#ifndef MTCOOL_H
#define MTCOOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    MTC_OK = 0,
    MTC_ERR_ARG = 1,     /* a NULL pointer, a task index out of range, a bad size */
    MTC_ERR_IO = 2,      /* the model file cannot be read */
    MTC_ERR_FORMAT = 3,  /* not an mtcool checkpoint, or one without what the call needs */
    MTC_ERR_SHAPE = 4,   /* an image that does not fit the model (e.g. grey for an RGB model) */
    MTC_ERR_RUNTIME = 5, /* the forward pass failed */
    MTC_ERR_PANIC = 6    /* an internal error (a bug): the handle may no longer be used */
};

enum { MTC_CLASSIFY = 0, MTC_SEGMENT = 1 };

typedef struct MtcModel mtc_model;

int mtc_load(const char *path, mtc_model **out);
void mtc_free(mtc_model *model);
const char *mtc_last_error(void);

int mtc_num_tasks(const mtc_model *model, int *n);
int mtc_input_shape(const mtc_model *model, int *channels, int *height, int *width);
/* kind: MTC_CLASSIFY (logits [batch, classes]) or MTC_SEGMENT (logits [batch, classes, height, width]) */
int mtc_task(const mtc_model *model, int task, int *kind, int *classes);
int mtc_output_len(const mtc_model *model, int task, int batch, size_t *len);

/* pixels: height x width x channels bytes (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA), row-major; out:
 * channels x height x width floats of the model's input, resized and normalised as in training. */
int mtc_prepare(const mtc_model *model, const uint8_t *pixels, int width, int height, int channels, float *out);
/* images: batch prepared inputs back to back; outputs: one caller-owned buffer per task. */
int mtc_run(const mtc_model *model, const float *images, int batch, float *const *outputs);

#ifdef __cplusplus
}
#endif

#endif /* MTCOOL_H */
