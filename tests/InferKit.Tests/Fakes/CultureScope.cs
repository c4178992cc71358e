using System.Globalization;

namespace InferKit.Tests.Fakes;

/// <summary>Sets the current culture (for example one that writes 1.5 as "1,5") until disposed, then puts the previous one back.</summary>
internal sealed class CultureScope : IDisposable
{
    private readonly CultureInfo _previous = CultureInfo.CurrentCulture;

    public CultureScope(string name) => CultureInfo.CurrentCulture = new CultureInfo(name);

    public void Dispose() => CultureInfo.CurrentCulture = _previous;
}
