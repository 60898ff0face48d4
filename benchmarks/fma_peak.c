/* The core's float32 multiply-add rate with nothing else to do: ACC independent vector accumulators
 * (enough to cover an FMA's latency on every unit of x86 and ARM cores), each updated `rounds` times.
 * The limit an exhaustive search at small D runs into: a score there is D multiply-adds. Built by
 * benchmarks/encode.py with the compiler and flags the native kernel uses (vectors of the machine's
 * own width, as in rvq_viewer/quant/nearest.c). */

#include <stdint.h>

#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif
#define VL (VBYTES / 4)
#define ACC 16

typedef float vf __attribute__((vector_size(VBYTES)));

/* Multiply-adds done (lanes x updates); `sink` keeps the compiler from dropping the loop. */
double fma_peak_run(int64_t rounds, float *sink) {
    vf acc[ACC];
    vf a = {0}, b = {0};
    for (int l = 0; l < VL; l++) { a[l] = 0.999999f; b[l] = 1e-7f; }
    for (int i = 0; i < ACC; i++)
        for (int l = 0; l < VL; l++) acc[i][l] = (float)i;
    for (int64_t r = 0; r < rounds; r++)
        for (int i = 0; i < ACC; i++) acc[i] = acc[i] * a + b;   /* contracted to one FMA */
    float total = 0;
    for (int i = 0; i < ACC; i++)
        for (int l = 0; l < VL; l++) total += acc[i][l];
    *sink = total;
    return (double)rounds * ACC * VL;
}
